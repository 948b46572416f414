"""`finetune-pipeline check-data PATH...`: the raw and dataset rules on any files or folders, writing nothing.

Each folder is read as `raw_examples` reads the raw folder (every *.jsonl,
*.csv, *.parquet under it; symlinks leaving it refused) and each file as that
one file. All rows then go through the `training_dataset` rules together, with
the config's mapping, rules and base model tokenizer, exactly as one dataset
would be built from them: duplicates across the given files count.

A file that cannot be read at all is reported by name and the others are still
checked; that (and only that) makes the command fail. Rejected rows are not a
failure: they are accounted for, by file and by reason.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from finetune_pipeline.lib.data.cleaning import CleanResult, clean
from finetune_pipeline.lib.data.config import ColumnMapping, DataConfig
from finetune_pipeline.lib.data.raw_files import (
    RAW_SUFFIXES,
    RawDataError,
    RawRow,
    raw_name,
    read_raw_file,
    scan_raw_folder,
)


@dataclass
class DataCheck:
    result: CleanResult
    files: list[str]  # every file read, in order
    unreadable: dict[str, str] = field(default_factory=dict)  # file (or path) -> why it cannot be read

    @property
    def accounted_for(self) -> bool:
        return self.result.raw_rows == len(self.result.records) + len(self.result.rejected)

    def summary(self) -> dict[str, Any]:
        """The machine-readable result: the command's last line."""
        files: dict[str, dict[str, Any]] = {}
        for name in self.files:
            files[name] = dict(self.result.per_file.get(name, {"raw_rows": 0, "kept": 0, "quarantined": 0}))
        for name, message in self.unreadable.items():
            files[name] = {"raw_rows": 0, "kept": 0, "quarantined": 0, "error": message}
        return {
            "raw_rows": self.result.raw_rows,
            "kept": len(self.result.records),
            "quarantined": len(self.result.rejected),
            "reasons": self.result.reason_counts(),
            "files": files,
        }

    def examples(self, per_reason: int) -> dict[str, list[str]]:
        """The first messages of each reason, to show what is wrong without printing every row."""
        out: dict[str, list[str]] = defaultdict(list)
        for q in self.result.rejected:
            if len(out[q.reason]) < per_reason:
                out[q.reason].append(q.message)
        return dict(sorted(out.items()))


def read_paths(paths: list[str], mapping: ColumnMapping) -> tuple[list[RawRow], list[str], dict[str, str]]:
    """Rows of every readable file, the files read, and (file -> message) for every path that cannot be."""
    rows: list[RawRow] = []
    files: list[str] = []
    unreadable: dict[str, str] = {}
    for arg in paths:
        path = Path(arg)
        if path.is_dir():
            prefix = arg.rstrip("/") + "/"
            found, problems = scan_raw_folder(path, prefix=prefix)
            unreadable.update(problems)
            if not found and not problems:
                unreadable[arg] = f"{arg}: no raw files under it (*.jsonl, *.csv, *.parquet)"
            targets = [(p, path, prefix + raw_name(p, path)) for p in found]
        elif path.is_file():
            if path.suffix.lower() not in RAW_SUFFIXES:
                unreadable[arg] = f"{arg}: not a raw file type (*.jsonl, *.csv, *.parquet)"
                continue
            targets = [(path, path.parent, arg)]
        else:
            unreadable[arg] = f"{arg}: no such file or folder"
            continue
        for file, folder, name in targets:
            try:
                rows.extend(read_raw_file(file, folder, mapping, name=name))
                files.append(name)
            except RawDataError as e:
                unreadable[name] = str(e)
    return rows, files, unreadable


def check_data(paths: list[str], cfg: DataConfig, count_tokens: Callable[[list[dict[str, str]]], int]) -> DataCheck:
    rows, files, unreadable = read_paths([os.fspath(p) for p in paths], cfg.mapping)
    return DataCheck(clean(rows, cfg, count_tokens, files=files), files, unreadable)


def format_report(check: DataCheck, examples: int = 3) -> list[str]:
    """The human-readable part: counts per file, per reason, and the first messages of each reason."""
    summary = check.summary()
    width = max([len("file"), *(len(f) for f in summary["files"])])
    lines = [f"{'file':<{width}}  {'raw':>7} {'kept':>7} {'quarantined':>11}"]
    for name, c in summary["files"].items():
        if "error" in c:
            lines.append(f"{name:<{width}}  cannot be read: {c['error'].removeprefix(name + ': ')}")
        else:
            lines.append(f"{name:<{width}}  {c['raw_rows']:>7} {c['kept']:>7} {c['quarantined']:>11}")
    lines.append(f"{'total':<{width}}  {summary['raw_rows']:>7} {summary['kept']:>7} {summary['quarantined']:>11}")
    if summary["reasons"]:
        rwidth = max(len(r) for r in summary["reasons"])
        lines += ["", f"{'reason':<{rwidth}}  {'rows':>7}"]
        lines += [f"{r:<{rwidth}}  {n:>7}" for r, n in summary["reasons"].items()]
    if examples > 0 and check.result.rejected:
        lines += ["", f"first {examples} quarantined rows of each reason:"]
        for messages in check.examples(examples).values():
            lines += [f"  {m}" for m in messages]
    return lines

"""Raw rows -> validated, deduplicated chat records split into train/val/test.

Nothing is lost: every raw row ends up either kept (in exactly one split) or in
the quarantine with one reason (a rule name) and a message naming its file and
row. Rows whose inputs match (case and spacing ignored) keep only the first;
if their outputs differ, the labels conflict and every row of the group is
quarantined, since nothing says which label is right. The split of a record is a function of its normalised user input alone,
so it never changes as the data grows and a duplicate of a test row can never
reach train.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from finetune_pipeline.lib.data import formats
from finetune_pipeline.lib.data.chat_format import ChatIssue, ChatRules, message_issues
from finetune_pipeline.lib.data.config import ColumnMapping, DataConfig
from finetune_pipeline.lib.data.raw_files import RawRow
from finetune_pipeline.lib.data.row_errors import RowError, described, json_type
from finetune_pipeline.lib.data.splits import UNUSED, hash_split, sample_per_class

SPLITS = ("train", "val", "test")
ROLES = {"system", "user", "assistant"}
# Keys OpenAI's chat fine-tuning format accepts on a message.
MESSAGE_KEYS = {"role", "content", "name", "weight"}
CHAT_RULES = ChatRules(roles=frozenset(ROLES), message_keys=frozenset(MESSAGE_KEYS))


@dataclass
class Rejection:
    file: str
    row: int
    reason: str  # a rule name, stable for counting
    message: str  # says what is wrong, naming file and row
    raw: Any

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "row": self.row, "reason": self.reason, "message": self.message, "raw": self.raw}


@dataclass
class Record:
    messages: list[dict[str, str]]
    file: str
    row: int
    split: str = ""

    @property
    def user_input(self) -> str:
        return "\n".join(m["content"] for m in self.messages if m["role"] == "user")

    @property
    def output(self) -> str:
        return [m["content"] for m in self.messages if m["role"] == "assistant"][-1]


@dataclass
class CleanResult:
    records: list[Record]
    rejected: list[Rejection]
    raw_rows: int
    per_file: dict[str, dict[str, int]] = field(default_factory=dict)
    # What the split policy did (few-shot draws), for stats.json.
    sampling: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> list[Record]:
        return [r for r in self.records if r.split == name]

    def reason_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(r.reason for r in self.rejected).items()))

    def split_counts(self) -> dict[str, int]:
        counts = Counter(r.split for r in self.records)
        out = {s: counts.get(s, 0) for s in SPLITS}
        if counts.get(UNUSED):
            out[UNUSED] = counts[UNUSED]
        return out


def normalise_text(text: str) -> str:
    """The identity of an input for dedup and splitting: case and spacing ignored."""
    return re.sub(r"\s+", " ", text).strip().lower()


def split_of(user_input: str, val_fraction: float, test_fraction: float) -> str:
    return hash_split(normalise_text(user_input), val_fraction, test_fraction)


def to_messages(data: dict[str, Any], mapping: ColumnMapping) -> list[dict[str, Any]]:
    """Apply the column mapping's row format; raise RowError for a row that cannot be mapped."""
    return formats.get(mapping.format).to_messages(data, mapping)


def check_chat_format(messages: list[Any]) -> None:
    """OpenAI's chat fine-tuning rules: roles, keys, non-empty text, an assistant turn; the first problem is raised."""
    for issue in message_issues(messages, CHAT_RULES):
        if (error := _row_error(issue, messages)) is not None:
            raise error


def _row_error(issue: ChatIssue, messages: list[Any]) -> RowError | None:
    """An issue in the quarantine's words (rule name and message); None for one these rules let pass."""
    i, value = issue.message, issue.value
    match issue.kind:
        case "message_not_object":
            return RowError("bad_message", f"message {i} is {described(value)}, not an object")
        case "unknown_key":
            return RowError("unrecognized_key", f"message {i} has unrecognised key(s) {value}")
        case "unknown_role":
            return RowError("unknown_role", f"message {i} has role {value!r}; allowed: {sorted(ROLES)}")
        case "content_not_text":
            return RowError("bad_content", f"message {i} ({messages[i]['role']}) content is {described(value)}, not text")
        case "empty_content" | "blank_content":
            return RowError("empty_content", f"message {i} ({messages[i]['role']}) has empty content")
        case "no_assistant_turn":
            return RowError("no_assistant_turn", "no assistant message to learn from")
        case "no_user_turn":
            return RowError("no_user_turn", "no user message")
    return None  # missing_key (reported as unknown_role / bad_content), last_turn_not_assistant


def check_seed_rules(messages: list[dict[str, str]], cfg: DataConfig) -> None:
    user = "\n".join(m["content"] for m in messages if m["role"] == "user")
    if len(user.strip()) < cfg.min_input_chars:
        raise RowError(
            "input_too_short", f"user input has {len(user.strip())} characters; the minimum is {cfg.min_input_chars}"
        )
    output = [m["content"] for m in messages if m["role"] == "assistant"][-1]
    if cfg.require_json_output:
        try:
            value = json.loads(output)
        except json.JSONDecodeError as e:
            raise RowError("output_not_json", f"assistant output is not valid JSON ({e.msg})") from e
        if not isinstance(value, dict):
            raise RowError("output_not_object", f"assistant output is a JSON {json_type(value)}, not an object")


def clean(
    rows: list[RawRow],
    cfg: DataConfig,
    count_tokens: Callable[[list[dict[str, str]]], int],
    files: list[str] | None = None,
) -> CleanResult:
    """Validate, deduplicate and split; `files` lists files to report even when they had no rows."""
    rejected: list[tuple[int, Rejection]] = []  # (position in `rows`, rejection): quarantine keeps input order

    def reject(i: int, row: RawRow, reason: str, detail: str) -> None:
        raw = row.data if row.data is not None else row.text
        rejected.append((i, Rejection(row.file, row.row, reason, f"{row.file} row {row.row}: {reason}: {detail}", raw)))

    # Pass 1: every rule that looks at one row alone.
    valid: list[tuple[int, RawRow, Record]] = []
    for i, row in enumerate(rows):
        if row.data is None:
            # `reason` is None only in raw snapshots written before parse errors had rule names.
            reject(i, row, row.reason or "unreadable_row", row.error or "could not parse")
            continue
        try:
            messages = to_messages(row.data, cfg.mapping)
            check_chat_format(messages)
            check_seed_rules(messages, cfg)
            n_tokens = count_tokens(messages)
            if n_tokens > cfg.max_tokens:
                raise RowError("too_many_tokens", f"{n_tokens} tokens with the chat template; the limit is {cfg.max_tokens}")
        except RowError as e:
            reject(i, row, e.reason, str(e))
            continue
        valid.append((i, row, Record([{"role": m["role"], "content": m["content"]} for m in messages], row.file, row.row)))

    # The test file's rows are the test split as published: no dedup among
    # them, and any other row with the same input is a leak, not a duplicate.
    split_cfg = cfg.split
    test_rows: list[tuple[int, Record]] = []
    if split_cfg.policy == "test_file":
        if files is not None and split_cfg.test_file not in files and split_cfg.test_file not in {r.file for r in rows}:
            raise ValueError(f"data.split.test_file {split_cfg.test_file!r} is not a raw file; raw files: {sorted(files)}")
        test_inputs = {}
        for i, row, record in valid:
            if row.file == split_cfg.test_file:
                record.split = "test"
                test_rows.append((i, record))
                test_inputs.setdefault(normalise_text(record.user_input), f"{row.file} row {row.row}")
        rest = []
        for i, row, record in valid:
            test_row = test_inputs.get(normalise_text(record.user_input))
            if row.file == split_cfg.test_file:
                continue
            if test_row:
                reject(i, row, "duplicate_of_test_row", f"same input as test row {test_row} ({split_cfg.test_file} "
                       "is the test split); training on it would leak the test set")
            else:
                rest.append((i, row, record))
        valid = rest
    test_fraction = 0.0 if split_cfg.policy == "test_file" else cfg.test_fraction

    # Pass 2: rows that share a normalised input. One output: keep the first,
    # the rest are duplicates. Several outputs: the labels conflict and nothing
    # says which is right, so none of the group is trained on.
    groups: dict[str, list[tuple[int, RawRow, Record]]] = {}
    for item in valid:
        groups.setdefault(normalise_text(item[2].user_input), []).append(item)
    kept: list[tuple[int, Record]] = list(test_rows)
    for group in groups.values():
        first_i, first_row, first = group[0]
        where = f"{first_row.file} row {first_row.row}"
        outputs = {_canonical_output(r.output) for _, _, r in group}
        if len(outputs) > 1:
            rows_named = ", ".join(f"{row.file} row {row.row}" for _, row, _ in group)
            for i, row, _ in group:
                reject(i, row, "conflicting_duplicate",
                       f"{len(group)} rows share this input with {len(outputs)} different outputs ({rows_named}); "
                       "the labels conflict, so none of them is used")
            continue
        for i, row, record in group[1:]:
            kind = "exact_duplicate" if record.user_input == first.user_input else "near_duplicate"
            reject(i, row, kind, f"same input as {where}")
        first.split = split_of(first.user_input, cfg.val_fraction, test_fraction)
        kept.append((first_i, first))
    records = [r for _, r in sorted(kept, key=lambda x: x[0])]
    rejections = [q for _, q in sorted(rejected, key=lambda x: x[0])]
    sampling: dict[str, Any] = {"policy": split_cfg.policy}
    if split_cfg.policy == "test_file":
        sampling["test_file"] = split_cfg.test_file
    for split, k in (("train", split_cfg.train_per_class), ("val", split_cfg.val_per_class)):
        if k:
            sampling[split] = sample_per_class(records, split, k, split_cfg)

    per_file: dict[str, dict[str, int]] = {f: {"raw_rows": 0, "kept": 0, "quarantined": 0} for f in files or []}
    for r in rows:
        per_file.setdefault(r.file, {"raw_rows": 0, "kept": 0, "quarantined": 0})["raw_rows"] += 1
    for r in records:
        per_file[r.file]["kept"] += 1
    for q in rejections:
        per_file[q.file]["quarantined"] += 1
    return CleanResult(records, rejections, len(rows), per_file, sampling)


def _canonical_output(text: str) -> str:
    """Outputs that mean the same: equal JSON values, or equal text up to surrounding space."""
    try:
        return json.dumps(json.loads(text), sort_keys=True, ensure_ascii=False)
    except json.JSONDecodeError:
        return text.strip()


def write_dataset(result: CleanResult, out: Path) -> dict[str, Any]:
    """Write train/val/test in OpenAI chat format (messages only), quarantine and sources."""
    # unused.jsonl: valid rows that few-shot sampling did not draw, kept for a later, larger draw.
    for split in (*SPLITS, UNUSED) if result.split(UNUSED) else SPLITS:
        with open(out / f"{split}.jsonl", "w") as f:
            for r in result.split(split):
                f.write(json.dumps({"messages": r.messages}, ensure_ascii=False) + "\n")
    with open(out / "quarantine.jsonl", "w") as f:
        for q in result.rejected:
            f.write(json.dumps(q.to_json(), ensure_ascii=False, default=str) + "\n")
    # Where each kept line came from, outside the OpenAI files (which allow no extra keys).
    with open(out / "sources.jsonl", "w") as f:
        for split in (*SPLITS, UNUSED):
            for line, r in enumerate(result.split(split), start=1):
                f.write(json.dumps({"split": split, "line": line, "file": r.file, "row": r.row}) + "\n")
    stats = {
        "raw_rows": result.raw_rows,
        "kept": len(result.records),
        "quarantined": len(result.rejected),
        "splits": result.split_counts(),
        "reasons": result.reason_counts(),
        "files": result.per_file,
        "split_policy": result.sampling,
    }
    (out / "stats.json").write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
    return stats


def read_split(path: Path) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def inputs_shared_between_splits(dataset_dir: Path) -> dict[str, list[str]]:
    """Normalised user inputs found in more than one split (should be none)."""
    where: dict[str, set[str]] = {}
    for split in SPLITS:
        for rec in read_split(Path(dataset_dir) / f"{split}.jsonl"):
            user = "\n".join(m["content"] for m in rec["messages"] if m["role"] == "user")
            where.setdefault(normalise_text(user), set()).add(split)
    return {k: sorted(v) for k, v in where.items() if len(v) > 1}

"""Read every raw file (JSONL, CSV, Parquet) under a folder into raw rows.

A raw row is one line of a JSONL file or one record of a table, with the file
and row number it came from, so every later rejection can name both. A row
that cannot even be parsed is still a row: it carries its parse error and the
cleaning stage quarantines it. Only a file that cannot be read at all (wrong
encoding, no parseable line, a mapped column missing) stops the run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from finetune_pipeline.lib.config import ColumnMapping

RAW_SUFFIXES = {".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet"}


class RawDataError(ValueError):
    """A raw file cannot be read at all; the message names the file and the problem."""


@dataclass
class RawRow:
    file: str  # relative to the raw folder
    row: int  # 1-based line number (JSONL) or record number (CSV/Parquet, header excluded)
    data: dict[str, Any] | None
    error: str | None = None  # parse error, if the row could not be read
    text: str | None = None  # the raw line, kept when it could not be parsed


def list_raw_files(raw_dir: Path) -> list[Path]:
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise RawDataError(f"raw folder not found: {raw_dir}")
    files = sorted(
        p for p in raw_dir.rglob("*")
        if p.is_file() and p.suffix.lower() in RAW_SUFFIXES and not p.name.startswith(".")
    )
    if not files:
        raise RawDataError(
            f"no raw files under {raw_dir}: expected *.jsonl, *.csv or *.parquet"
        )
    return files


def read_raw_folder(raw_dir: Path, mapping: ColumnMapping) -> list[RawRow]:
    rows: list[RawRow] = []
    for path in list_raw_files(raw_dir):
        rows.extend(read_raw_file(path, Path(raw_dir), mapping))
    return rows


def read_raw_file(path: Path, raw_dir: Path, mapping: ColumnMapping) -> list[RawRow]:
    kind = RAW_SUFFIXES[path.suffix.lower()]
    rel = str(path.relative_to(raw_dir))
    if kind == "jsonl":
        rows = _read_jsonl(path, rel)
        columns = set().union(*(r.data.keys() for r in rows if r.data is not None))
    else:
        rows, columns = _read_table(path, rel, kind)
    _check_mapped_columns(rel, mapping, columns, is_table=kind != "jsonl", has_rows=bool(rows))
    return rows


def _read_jsonl(path: Path, rel: str) -> list[RawRow]:
    try:
        text = path.read_bytes().decode("utf-8-sig")  # tolerate a BOM
    except UnicodeDecodeError as e:
        raise RawDataError(f"{rel}: not UTF-8 text (byte {e.start}): cannot read it as JSONL") from e
    rows: list[RawRow] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue  # blank lines are not rows
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            rows.append(RawRow(rel, number, None, error=f"not valid JSON: {e.msg}", text=line))
            continue
        if not isinstance(value, dict):
            rows.append(RawRow(rel, number, None, error=f"a JSON {type(value).__name__}, not an object", text=line))
            continue
        rows.append(RawRow(rel, number, value))
    if rows and all(r.data is None for r in rows):
        raise RawDataError(
            f"{rel}: not a JSONL file: none of its {len(rows)} lines is a JSON object "
            f"(line {rows[0].row}: {rows[0].error})"
        )
    return rows


def _read_table(path: Path, rel: str, kind: str) -> tuple[list[RawRow], set[str]]:
    try:
        if kind == "csv":
            # Strings stay strings: "007" must not become 7.
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        else:
            frame = pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        return [], set()
    except Exception as e:  # pandas raises many types; all mean "unreadable"
        raise RawDataError(f"{rel}: cannot read it as {kind.upper()}: {e}") from e
    rows = [
        RawRow(rel, i, {str(k): _plain(v) for k, v in record.items()})
        for i, record in enumerate(frame.to_dict(orient="records"), start=1)
    ]
    return rows, {str(c) for c in frame.columns}


def _plain(v: Any) -> Any:
    """Parquet/NumPy scalars and arrays to plain Python values."""
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, float) and v != v:  # NaN
        return None
    return v


def mapped_columns(mapping: ColumnMapping) -> list[str]:
    """The columns a mapping cannot do without."""
    if mapping.format == "seed":
        return [mapping.input, mapping.output]
    if mapping.format == "chat":
        return [mapping.messages]
    return [mapping.text, *mapping.labels]


def _check_mapped_columns(rel: str, mapping: ColumnMapping, present: set[str], is_table: bool, has_rows: bool) -> None:
    """A mapping that names a column the file never has is a config error, not bad rows."""
    if not has_rows and not present:
        return  # an empty file has nothing to map
    missing = [c for c in mapped_columns(mapping) if c not in present]
    if missing:
        where = "columns" if is_table else "keys (in any row)"
        raise RawDataError(
            f"{rel}: column mapping (format {mapping.format!r}) names {missing}, "
            f"but the file's {where} are {sorted(present)}"
        )

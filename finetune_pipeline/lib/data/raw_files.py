"""Read every raw file (JSONL, CSV, Parquet) under a folder into raw rows.

A raw row is one line of a JSONL file or one record of a table, with the file
and row number it came from, so every later rejection can name both. A row
that cannot even be parsed is still a row: it carries its parse error and a
rule name (`reason`), and the cleaning stage quarantines it.

Only a file that cannot be read at all stops the run: a symlink or special
file that leaves the raw folder, UTF-16 text, a JSONL file none of whose lines
is a JSON object, an unreadable Parquet file, or a column mapping that names a
column the file never has. All such files are reported together.

Encoding: raw files are UTF-8 (a BOM is tolerated). Text is decoded line by
line (record by record for CSV), not file by file: one stray Latin-1 or
Windows-1252 byte, typically pasted from another tool, quarantines that one
row as `not_utf8` instead of stopping the nightly run over the whole file.
Nothing guesses another encoding: a wrong guess would silently corrupt the
text that is then trained on, so the row goes to the quarantine, raw bytes
kept (backslash-escaped), to be fixed at the source.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import stat
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune_pipeline.lib.data import formats
from finetune_pipeline.lib.data.config import ColumnMapping
from finetune_pipeline.lib.data.row_errors import json_type

RAW_SUFFIXES = {".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet"}
UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


class RawDataError(ValueError):
    """A raw file cannot be read at all; the message names the file and the problem."""

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None):
        super().__init__(message)
        # (file, message) for each unreadable file, so callers can report each one.
        self.problems = problems or []


@dataclass
class RawRow:
    file: str  # relative to the raw folder, printable (see raw_name)
    row: int  # 1-based line number (JSONL) or record number (CSV/Parquet, header excluded)
    data: dict[str, Any] | None
    error: str | None = None  # parse error, if the row could not be read
    text: str | None = None  # the raw line, kept when it could not be parsed
    reason: str | None = None  # the rule the parse error breaks (not_utf8, not_json, ...)


def raw_name(path: Path, raw_dir: Path) -> str:
    """A file's name relative to the raw folder, safe to print and to write as UTF-8 JSON.

    Linux file names are bytes: undecodable bytes become backslash escapes and
    control characters (a newline in a name would split a log line) are escaped.
    """
    rel = os.fsencode(Path(path).relative_to(raw_dir)).decode("utf-8", "backslashreplace")
    return "".join(c if unicodedata.category(c) != "Cc" else repr(c)[1:-1] for c in rel)


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def scan_raw_folder(raw_dir: Path, prefix: str = "") -> tuple[list[Path], list[tuple[str, str]]]:
    """The raw files under a folder, and (file, problem) for each one refused (names start with `prefix`).

    Symlinks are followed only while they stay inside the raw folder; one that
    leaves it is refused before anything reads it (a raw folder is often
    writable by more people than the machine's other files). Hidden files and
    folders (".name") are not raw data.
    """
    raw_dir = Path(raw_dir)
    root = raw_dir.resolve()
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(raw_dir, followlinks=False):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for d in dirnames:
            p = here / d
            if p.is_symlink() and not _inside(p.resolve(), root):
                name = prefix + raw_name(p, raw_dir)
                problems.append((name, f"{name}: a symlinked folder pointing outside the raw folder "
                                       f"({os.readlink(p)}); refusing to read it"))
        for f in sorted(filenames):
            p = here / f
            if f.startswith(".") or p.suffix.lower() not in RAW_SUFFIXES:
                continue
            name = prefix + raw_name(p, raw_dir)
            target = p.resolve()
            if not _inside(target, root):
                problems.append((name, f"{name}: a symlink to {os.readlink(p)}, outside the raw folder "
                                       f"{raw_dir}; refusing to read it"))
                continue
            try:
                mode = os.stat(target).st_mode
            except OSError as e:
                problems.append((name, f"{name}: cannot open it ({e.strerror})"))
                continue
            if not stat.S_ISREG(mode):
                # A FIFO or device would block or never end.
                problems.append((name, f"{name}: not a regular file; refusing to read it"))
                continue
            files.append(p)
    return sorted(files), problems


def list_raw_files(raw_dir: Path) -> list[Path]:
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise RawDataError(f"raw folder not found: {raw_dir}")
    files, problems = scan_raw_folder(raw_dir)
    if problems:
        raise _combined(problems)
    if not files:
        raise RawDataError(
            f"no raw files under {raw_dir}: expected *.jsonl, *.csv or *.parquet"
        )
    return files


def read_raw_folder(raw_dir: Path, mapping: ColumnMapping) -> list[RawRow]:
    """Every row of every raw file; raises one RawDataError naming every unreadable file."""
    rows: list[RawRow] = []
    problems: list[tuple[str, str]] = []
    for path in list_raw_files(raw_dir):
        try:
            rows.extend(read_raw_file(path, Path(raw_dir), mapping))
        except RawDataError as e:
            problems.append((raw_name(path, Path(raw_dir)), str(e)))
    if problems:
        raise _combined(problems)
    return rows


def _combined(problems: list[tuple[str, str]]) -> RawDataError:
    if len(problems) == 1:
        return RawDataError(problems[0][1], problems)
    lines = "\n".join(f"  {message}" for _, message in problems)
    return RawDataError(f"{len(problems)} raw files cannot be read:\n{lines}", problems)


def read_raw_file(path: Path, raw_dir: Path, mapping: ColumnMapping, name: str | None = None) -> list[RawRow]:
    """The rows of one file; `name` (default: its path relative to raw_dir) labels every row."""
    kind = RAW_SUFFIXES[path.suffix.lower()]
    rel = name or raw_name(path, raw_dir)
    data = _read_bytes(path, Path(raw_dir), rel)
    if kind == "jsonl":
        rows = _parse_jsonl(data, rel)
        columns = set().union(*(r.data.keys() for r in rows if r.data is not None))
    elif kind == "csv":
        rows, columns = _parse_csv(data, rel)
    else:
        rows, columns = _parse_parquet(data, rel)
    _check_mapped_columns(rel, mapping, columns, is_table=kind != "jsonl", has_rows=bool(rows))
    return rows


def _read_bytes(path: Path, raw_dir: Path, rel: str) -> bytes:
    # Checked again here, not only when listing: read_raw_file is also called directly.
    target = Path(path).resolve()
    if not _inside(target, Path(raw_dir).resolve()):
        raise RawDataError(f"{rel}: resolves to {target}, outside the raw folder {raw_dir}; refusing to read it")
    try:
        return target.read_bytes()
    except OSError as e:
        raise RawDataError(f"{rel}: cannot read it ({e.strerror})") from e


def _refuse_utf16(data: bytes, rel: str) -> None:
    if data.startswith(UTF16_BOMS):
        raise RawDataError(
            f"{rel}: UTF-16 text (byte-order mark {data[:2].hex(' ')}); raw files must be UTF-8: re-save it as UTF-8"
        )


def _bad_bytes(raw: bytes, e: UnicodeDecodeError) -> str:
    return (f"not UTF-8: byte 0x{raw[e.start]:02x} at byte {e.start + 1} of the line ({e.reason}); "
            "raw files must be UTF-8")


def _parse_jsonl(data: bytes, rel: str) -> list[RawRow]:
    _refuse_utf16(data, rel)
    data = data.removeprefix(codecs.BOM_UTF8)
    # Split on b"\n" only: str.splitlines() would also split on U+2028 and
    # other separators that JSON allows inside a string.
    lines = data.split(b"\n")
    complete = data.endswith(b"\n")
    if complete:
        lines.pop()
    rows: list[RawRow] = []
    for number, raw in enumerate(lines, start=1):
        raw = raw.removesuffix(b"\r")  # CRLF files
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            rows.append(RawRow(rel, number, None, error=_bad_bytes(raw, e),
                               text=raw.decode("utf-8", "backslashreplace"), reason="not_utf8"))
            continue
        if not line.strip():
            continue  # blank lines are not rows
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            if number == len(lines) and not complete:
                rows.append(RawRow(rel, number, None, text=line, reason="truncated_line", error=(
                    f"the last line has no newline and is not valid JSON ({e.msg} at column {e.colno}): "
                    "the file looks cut off mid-write")))
            else:
                rows.append(RawRow(rel, number, None, error=f"not valid JSON: {e.msg} at column {e.colno}",
                                   text=line, reason="not_json"))
            continue
        if not isinstance(value, dict):
            rows.append(RawRow(rel, number, None, error=f"a JSON {json_type(value)}, not an object",
                               text=line, reason="not_an_object"))
            continue
        rows.append(RawRow(rel, number, value))
    if rows and all(r.data is None for r in rows):
        if all(r.reason == "not_utf8" for r in rows):
            raise RawDataError(f"{rel}: not UTF-8 text: none of its {len(rows)} lines decodes as UTF-8 "
                               f"(line {rows[0].row}: {rows[0].error}); re-save it as UTF-8")
        raise RawDataError(
            f"{rel}: not a JSONL file: none of its {len(rows)} lines is a JSON object "
            f"(line {rows[0].row}: {rows[0].error})"
        )
    return rows


def _parse_csv(data: bytes, rel: str) -> tuple[list[RawRow], set[str]]:
    """CSV through the csv module: every cell a string ("007" stays "007"), one bad record one bad row."""
    _refuse_utf16(data, rel)
    # surrogateescape keeps undecodable bytes as lone surrogates, so the record
    # that holds them can be found after parsing and quarantined alone.
    text = data.removeprefix(codecs.BOM_UTF8).decode("utf-8", "surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return [], set()  # an empty file has no columns and no rows
    except csv.Error as e:
        raise RawDataError(f"{rel}: cannot read it as CSV: {e}") from e
    if any(_has_bad_bytes(h) for h in header):
        raise RawDataError(f"{rel}: the CSV header is not UTF-8 text ({_escaped(','.join(header))})")
    rows: list[RawRow] = []
    number = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise RawDataError(f"{rel}: cannot read it as CSV after record {number}: {e}") from e
        if not cells:
            continue  # blank lines are not rows
        number += 1
        line = _escaped(",".join(cells))
        bad = [(h, c) for h, c in zip(header, cells) if _has_bad_bytes(c)]
        if bad:
            column, cell = bad[0]
            raw = cell.encode("utf-8", "surrogateescape")
            detail = f"column {column!r} is not UTF-8; raw files must be UTF-8"
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                detail = _bad_bytes(raw, e).replace("of the line", f"of column {column!r}")
            rows.append(RawRow(rel, number, None, error=detail, text=line, reason="not_utf8"))
        elif len(cells) != len(header):
            rows.append(RawRow(rel, number, None, text=line, reason="csv_field_count",
                               error=f"{len(cells)} fields, but the header has {len(header)}"))
        else:
            rows.append(RawRow(rel, number, dict(zip(header, cells))))
    return rows, set(header)


def _has_bad_bytes(text: str) -> bool:
    return any("\udc80" <= c <= "\udcff" for c in text)


def _escaped(text: str) -> str:
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _parse_parquet(data: bytes, rel: str) -> tuple[list[RawRow], set[str]]:
    import pandas as pd

    try:
        frame = pd.read_parquet(io.BytesIO(data))
    except Exception as e:  # pyarrow raises many types; all mean "unreadable"
        raise RawDataError(f"{rel}: cannot read it as PARQUET: {e}") from e
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
    return formats.get(mapping.format).required_columns(mapping)


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

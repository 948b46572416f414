"""Writes the bad-input corpus: one raw folder per case under `files/<case id>/`.

    .venv/bin/python -m finetune_pipeline_tests.corpus.make_corpus

rewrites the committed files. `test_corpus.py` checks that the committed files
are byte for byte what this script writes, so the exact bytes of every case
(BOMs, CRLF, stray Latin-1 bytes, UTF-16) are documented here, readable.
What should not be committed (a 1 MB line, symlinks leaving the folder, file
names that are not UTF-8 or hold a newline) is added at test time by
`add_runtime_files`. The expected outcome of every case is in `cases.yaml`.
"""

from __future__ import annotations

import codecs
import json
import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FILES = HERE / "files"
SYSTEM = "Classify the support message. Reply with JSON."
LABEL = {"category": "billing", "sentiment": "neutral", "priority": "low"}


def good(case: str, i: int, category: str = "billing") -> dict:
    """A valid seed row whose input is unique across the corpus (cases are also checked together)."""
    return {"system_prompt": SYSTEM, "input": f"Ticket {i} for case {case}: my invoice shows a double charge",
            "output": json.dumps({**LABEL, "category": category})}


def seed(text: str, output: object = None, **extra) -> dict:
    return {"system_prompt": SYSTEM, "input": text,
            "output": json.dumps(LABEL) if output is None else output, **extra}


def chat(*turns: tuple[str, object], **extra) -> dict:
    return {"messages": [{"role": r, "content": c} for r, c in turns], **extra}


def line(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def jsonl(*values: object, newline: str = "\n") -> bytes:
    """Objects become JSON lines; str/bytes values are written as they are (bad lines)."""
    out = b""
    for v in values:
        if isinstance(v, bytes):
            out += v + newline.encode()
        else:
            out += (v if isinstance(v, str) else line(v)).encode() + newline.encode()
    return out


def csv_text(*lines: str, newline: str = "\n") -> bytes:
    return "".join(x + newline for x in lines).encode()


def case_files() -> dict[str, dict[str, bytes]]:
    """case id -> {relative path -> bytes}."""
    c: dict[str, dict[str, bytes]] = {}

    c["empty_file"] = {
        "empty.jsonl": b"",
        "empty.csv": b"",
        "blank_lines.jsonl": b"\n  \n\r\n",
        "good.jsonl": jsonl(good("empty_file", 1), good("empty_file", 2)),
    }
    c["bom"] = {
        "bom.jsonl": codecs.BOM_UTF8 + jsonl(good("bom", 1), good("bom", 2)),
        # Without BOM handling the first column would be named "\ufeffsystem_prompt".
        "bom.csv": codecs.BOM_UTF8 + csv_text(
            "system_prompt,input,output",
            f'{SYSTEM},Ticket 3 for case bom: charged twice for one order,"{{""category"": ""billing""}}"'),
    }
    c["crlf"] = {
        "crlf.jsonl": jsonl(good("crlf", 1), good("crlf", 2), newline="\r\n"),
        "crlf.csv": csv_text(
            "system_prompt,input,output",
            f'{SYSTEM},Ticket 3 for case crlf: refund not received,"{{""category"": ""billing""}}"',
            # A quoted cell may hold a CRLF of its own: still one record.
            f'{SYSTEM},"Ticket 4 for case crlf: first line\r\nsecond line of the same message",'
            '"{""category"": ""billing""}"',
            newline="\r\n"),
    }
    c["non_utf8_bytes"] = {
        "tickets.jsonl": jsonl(
            good("non_utf8_bytes", 1),
            line(seed("Ticket 2 for case non_utf8_bytes: the caf\u00e9 charged me twice")).encode("latin-1"),
            good("non_utf8_bytes", 3),
            line(seed("Ticket 4 for case non_utf8_bytes: broken byte here")).encode().replace(b"broken", b"br\xffoken"),
        ),
    }
    c["truncated_last_line"] = {
        "export.jsonl": jsonl(good("truncated_last_line", 1), good("truncated_last_line", 2))
        + line(good("truncated_last_line", 3))[:50].encode(),  # no newline: the writer was cut off
    }
    c["not_an_object"] = {
        "lines.jsonl": jsonl(good("not_an_object", 1), "[1, 2]", '"just a string"', "42", "null",
                             good("not_an_object", 6)),
    }
    c["invalid_json_line"] = {
        "lines.jsonl": jsonl(good("invalid_json_line", 1), '{"input": "trailing comma", }',
                             "{'input': 'single quotes'}", good("invalid_json_line", 4)),
    }
    ok = ("assistant", line(LABEL))
    c["missing_or_empty_messages"] = {
        "chat.jsonl": jsonl(
            chat(("user", "Ticket 1 for case missing_or_empty_messages: card declined"), ok),
            {"messages": []},
            {"id": 7, "note": "no messages key at all"},
            {"messages": "hello, is this a list?"},
            {"messages": None},
        ),
    }
    c["unknown_role"] = {
        "chat.jsonl": jsonl(
            chat(("user", "Ticket 1 for case unknown_role: card declined at the shop"), ok),
            chat(("bot", "Ticket 2 for case unknown_role: hello there"), ok),
            chat(("user", "Ticket 3 for case unknown_role: where is my refund"), ("Assistant", line(LABEL))),
        ),
    }
    c["null_or_non_string_content"] = {
        "chat.jsonl": jsonl(
            chat(("user", "Ticket 1 for case null_or_non_string_content: app crashes"), ok),
            chat(("user", None), ok),
            chat(("user", 42), ok),
            chat(("user", [{"type": "text", "text": "content parts are not text"}]), ok),
            chat(("user", "Ticket 5 for case null_or_non_string_content: empty answer"), ("assistant", "")),
            chat(("user", "   \t "), ok),
        ),
    }
    c["no_assistant_turn"] = {
        "chat.jsonl": jsonl(
            chat(("user", "Ticket 1 for case no_assistant_turn: cancel my order"), ok),
            chat(("user", "Ticket 2 for case no_assistant_turn: cancel my order please")),
            chat(("system", SYSTEM), ("user", "Ticket 3 for case no_assistant_turn: nobody answered")),
        ),
    }
    c["unrecognized_message_key"] = {
        "chat.jsonl": jsonl(
            chat(("user", "Ticket 1 for case unrecognized_message_key: refund please"), ok),
            {"messages": [{"role": "user", "content": "Ticket 2 for case unrecognized_message_key: hi",
                           "timestamp": "2024-05-01"}, {"role": "assistant", "content": line(LABEL)}]},
        ),
    }
    c["missing_input_or_output"] = {
        "seed.jsonl": jsonl(
            good("missing_input_or_output", 1),
            {"system_prompt": SYSTEM, "output": line(LABEL)},
            {"system_prompt": SYSTEM, "input": None, "output": line(LABEL)},
            {"system_prompt": SYSTEM, "input": "Ticket 4 for case missing_input_or_output: no answer"},
            seed("Ticket 5 for case missing_input_or_output: blank answer", output="   "),
        ),
    }
    c["input_too_short"] = {
        "seed.jsonl": jsonl(good("input_too_short", 1), seed("help!!"), seed("   ok     ")),
    }
    c["output_not_json"] = {
        "seed.jsonl": jsonl(
            good("output_not_json", 1),
            seed("Ticket 2 for case output_not_json: wrong charge", output="category: billing"),
            seed("Ticket 3 for case output_not_json: wrong charge again", output='{"category": "billing"'),
        ),
    }
    c["output_json_not_object"] = {
        "seed.jsonl": jsonl(
            good("output_json_not_object", 1),
            seed("Ticket 2 for case output_json_not_object: a list", output='["billing"]'),
            seed("Ticket 3 for case output_json_not_object: a string", output='"billing"'),
            seed("Ticket 4 for case output_json_not_object: a number", output="42"),
            seed("Ticket 5 for case output_json_not_object: a null", output="null"),
        ),
    }
    c["type_changes_between_rows"] = {
        "seed.jsonl": jsonl(
            good("type_changes_between_rows", 1),
            # The answer stored as an object rather than a JSON string: still the intended answer.
            seed("Ticket 2 for case type_changes_between_rows: object output", output=LABEL),
            seed("Ticket 3 for case type_changes_between_rows: number output", output=7),
            seed(12345678901),
            seed(["Ticket 5", "as a list"]),
            seed("Ticket 6 for case type_changes_between_rows: numeric prompt", system_prompt=5),
        ),
    }
    c["token_overflow"] = {
        # About 1,200 tokens with the chat template; the limit is 512.
        "long.jsonl": jsonl(good("token_overflow", 1),
                            seed("Ticket 2 for case token_overflow: " + "please refund my order " * 240)),
    }
    c["one_mb_line"] = {
        # The 1 MB line itself is added at test time (add_runtime_files).
        "good.jsonl": jsonl(good("one_mb_line", 1), good("one_mb_line", 2)),
    }
    dup = good("exact_duplicates", 1)
    c["exact_duplicates"] = {
        "dups.jsonl": jsonl(dup, good("exact_duplicates", 2), dup, dup),
    }
    c["whitespace_case_duplicates"] = {
        "a.jsonl": jsonl(seed("Ticket 1 for case whitespace_case_duplicates: My card was charged twice")),
        "b.jsonl": jsonl(
            seed("  ticket 1 for CASE whitespace_case_duplicates:   my card was\tcharged TWICE  "),
            seed("TICKET 1 FOR CASE WHITESPACE_CASE_DUPLICATES: MY CARD WAS CHARGED TWICE"),
            good("whitespace_case_duplicates", 2),
        ),
    }
    same = "Ticket 1 for case conflicting_outputs: the app charged me and then crashed"
    c["conflicting_outputs"] = {
        "labels.jsonl": jsonl(
            seed(same, output=json.dumps({**LABEL, "category": "billing"})),
            good("conflicting_outputs", 2),
            seed(same.upper(), output=json.dumps({**LABEL, "category": "technical"})),
            # Same input, same JSON value written with other key order and spacing: a duplicate, not a conflict.
            seed("Ticket 4 for case conflicting_outputs: refund", output='{"priority":"low","category":"billing",'
                 '"sentiment":"neutral"}'),
            seed("Ticket 4 for case conflicting_outputs: refund", output=json.dumps(LABEL, indent=1)),
        ),
    }
    c["train_test_overlap"] = {
        # A supplier's own split: the same inputs in both files.
        "test.jsonl": jsonl(seed("Ticket 1 for case train_test_overlap: locked out of my account"),
                            seed("Ticket 2 for case train_test_overlap: package arrived broken")),
        "train.jsonl": jsonl(seed("Ticket 1 for case train_test_overlap: locked out of my account"),
                             seed("ticket 2 for case train_test_overlap:  PACKAGE arrived broken"),
                             good("train_test_overlap", 3), good("train_test_overlap", 4)),
    }
    c["mixed_encodings"] = {
        "utf8.jsonl": jsonl(seed("Ticket 1 for case mixed_encodings: caf\u00e9 in Z\u00fcrich overcharged me"),
                            seed("Ticket 2 for case mixed_encodings: \u201csmart quotes\u201d are fine in UTF-8")),
        "windows1252.jsonl": jsonl(
            good("mixed_encodings", 3),  # pure ASCII: the same bytes in every such encoding
            line(seed("Ticket 4 for case mixed_encodings: caf\u00e9 bill")).encode("cp1252"),
            line(seed("Ticket 5 for case mixed_encodings: \u201cquoted\u201d complaint")).encode("cp1252"),
        ),
    }
    c["utf16_file"] = {
        "excel_export.jsonl": codecs.BOM_UTF16_LE + jsonl(good("utf16_file", 1)).decode().encode("utf-16-le"),
        "good.jsonl": jsonl(good("utf16_file", 2)),
    }
    c["not_jsonl_at_all"] = {
        "notes.jsonl": b"Meeting notes, 3 May\nThis file was saved with the wrong extension.\n",
        "good.jsonl": jsonl(good("not_jsonl_at_all", 1)),
    }
    c["unicode_line_separator"] = {
        # U+2028, U+2029 and U+0085 are legal unescaped inside a JSON string and are not line breaks.
        "seps.jsonl": jsonl(seed("Ticket 1 for case unicode_line_separator: first\u2028second\u2029third\u0085end"),
                            good("unicode_line_separator", 2)),
    }
    c["csv_missing_label_column"] = {
        "intents.csv": csv_text("text,category", "Ticket 1 for case csv_missing_label_column: lost card,card"),
    }
    c["csv_bad_rows"] = {
        "intents.csv": csv_text(
            "text,category,priority",
            "Ticket 1 for case csv_bad_rows: lost my card yesterday,card,high",
            "Ticket 2 for case csv_bad_rows: top up failed,,low",
            "Ticket 3 for case csv_bad_rows: extra field,card,low,surprise",
            "Ticket 4 for case csv_bad_rows: short row,card",
        ) + "Ticket 5 for case csv_bad_rows: caf\u00e9 card,card,low\n".encode("cp1252")
        + csv_text('"Ticket 6 for case csv_bad_rows: a ""quoted"", multi\nline message",card,low'),
    }
    c["parquet_unreadable"] = {
        "broken.parquet": b"PAR1 this is not really a parquet file\n",
        "good.jsonl": jsonl(good("parquet_unreadable", 1)),
    }
    c["odd_file_names"] = {
        # Spaces, brackets, quotes, '#', '%' and non-ASCII letters in folder and file names.
        "sub dir [x]/odd name \u00fc #1 'q' 100% (copy).jsonl": jsonl(
            good("odd_file_names", 1), seed("tiny")),
        "-starts-with-dash.csv": csv_text(
            "system_prompt,input,output",
            f'{SYSTEM},Ticket 3 for case odd_file_names: dash file,"{{""category"": ""billing""}}"'),
    }
    c["all_rows_rejected"] = {
        "bad.jsonl": jsonl(seed("short"), seed("too short"), seed("Ticket 3 for case all_rows_rejected", output="n/a"),
                           "[]", seed("Ticket 5 for case all_rows_rejected: no JSON", output="billing")),
    }
    return c


def parquet_files() -> dict[str, dict[str, "object"]]:
    """Parquet cases as DataFrames (their bytes depend on the pyarrow version, so they are written, not compared)."""
    import pandas as pd

    return {
        "parquet_wrong_types": {
            # Typed columns: input is int64 and output float64, not strings.
            "typed.parquet": pd.DataFrame({"system_prompt": [SYSTEM, SYSTEM], "input": [1234567, 7654321],
                                           "output": [1.5, 2.5]}),
            # The answer as a struct column: an object, so the intended answer.
            "good.parquet": pd.DataFrame({
                "system_prompt": [SYSTEM],
                "input": ["Ticket 3 for case parquet_wrong_types: struct output"],
                "output": [dict(LABEL)]}),
        },
    }


def write_corpus(root: Path = FILES) -> None:
    if root.exists():
        shutil.rmtree(root)
    for case, files in all_case_files().items():
        for rel, data in files.items():
            path = root / case / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    write_parquet(root)


def write_parquet(root: Path) -> None:
    for case, files in parquet_files().items():
        for rel, frame in files.items():
            path = root / case / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            frame.to_parquet(path, index=False)


def add_runtime_files(case: str, raw: Path, outside: Path) -> None:
    """Content added to a case's raw folder at test time; `outside` is a folder beside it."""
    if case == "one_mb_line":
        text = "Ticket 3 for case one_mb_line: " + "my parcel never arrived and nobody answers " * 25_000
        (raw / "huge.jsonl").write_bytes(jsonl(seed(text)))
        assert len(text) > 1_000_000
    elif case == "symlink_outside":
        outside.mkdir(parents=True, exist_ok=True)
        (outside / "secret.jsonl").write_bytes(jsonl(seed("Ticket 9 for case symlink_outside: not yours to read")))
        (outside / "secrets").mkdir(exist_ok=True)
        (outside / "secrets" / "more.jsonl").write_bytes(jsonl(good("symlink_outside", 9)))
        (raw / "linked.jsonl").symlink_to(outside / "secret.jsonl")
        (raw / "linked_dir").symlink_to(outside / "secrets", target_is_directory=True)
    elif case == "symlink_inside":
        (raw / "alias.jsonl").symlink_to(Path("real") / "tickets.jsonl")
    elif case == "odd_file_names":
        folder = os.fsencode(raw)
        # Linux names are bytes: one that is not UTF-8, one with a newline.
        with open(os.path.join(folder, b"latin1 caf\xe9.jsonl"), "wb") as f:
            f.write(jsonl(good("odd_file_names", 4)))
        with open(os.path.join(folder, b"line\nbreak.jsonl"), "wb") as f:
            f.write(jsonl(good("odd_file_names", 5), seed("x")))


def runtime_only_cases() -> dict[str, dict[str, bytes]]:
    """Cases whose committed folder holds only what add_runtime_files builds on."""
    return {
        "symlink_outside": {"good.jsonl": jsonl(good("symlink_outside", 1))},
        "symlink_inside": {"real/tickets.jsonl": jsonl(good("symlink_inside", 1), good("symlink_inside", 2))},
    }


def all_case_files() -> dict[str, dict[str, bytes]]:
    return {**case_files(), **runtime_only_cases()}


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else FILES
    write_corpus(target)
    print(f"wrote {len(all_case_files()) + len(parquet_files())} cases under {target}")

"""Raw file reading (three formats, three file types) and the cleaning rules."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from finetune_pipeline.lib.config import ColumnMapping, DataConfig
from finetune_pipeline.lib.data.cleaning import (
    clean,
    inputs_shared_between_splits,
    split_of,
    write_dataset,
)
from finetune_pipeline.lib.data.raw_files import RawDataError, read_raw_folder
from finetune_pipeline.lib.training.collate import count_tokens
from finetune_pipeline_tests.helpers import SAMPLE_RAW, SYSTEM, seed_row, write_jsonl


def _clean(rows, cfg=None, tokens=lambda m: 50):
    return clean(rows, cfg or DataConfig(), tokens)


def test_seed_jsonl_csv_and_parquet_are_all_read(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [seed_row("My invoice shows a double charge")])
    (tmp_path / "sub").mkdir()
    pd.DataFrame([seed_row("Where is my parcel, it is late")]).to_csv(tmp_path / "sub" / "b.csv", index=False)
    pd.DataFrame([seed_row("The app crashes when I log in")]).to_parquet(tmp_path / "c.parquet")
    rows = read_raw_folder(tmp_path, ColumnMapping())
    assert [(r.file, r.row) for r in rows] == [("a.jsonl", 1), ("c.parquet", 1), ("sub/b.csv", 1)]
    result = _clean(rows)
    assert len(result.records) == 3 and not result.rejected
    assert result.records[0].messages[0] == {"role": "system", "content": SYSTEM}


def test_chat_messages_format(tmp_path):
    good = {"messages": [{"role": "user", "content": "Please cancel my order 1234"},
                         {"role": "assistant", "content": '{"category": "shipping"}'}]}
    no_assistant = {"messages": [{"role": "user", "content": "Please cancel my order 99"}]}
    bad_role = {"messages": [{"role": "robot", "content": "hi there friend"},
                             {"role": "assistant", "content": "{}"}]}
    write_jsonl(tmp_path / "chat.jsonl", [good, no_assistant, bad_role])
    mapping = ColumnMapping(format="chat", default_system_prompt="Be brief.")
    result = _clean(read_raw_folder(tmp_path, mapping), DataConfig(mapping=mapping))
    assert [r.messages[0]["content"] for r in result.records] == ["Be brief."]
    assert sorted(q.reason for q in result.rejected) == ["no_assistant_turn", "unknown_role"]


def test_table_format_labels_become_json_output(tmp_path):
    pd.DataFrame({"text": ["I lost my card yesterday", "How do I top up my account?"],
                  "category": ["lost_or_stolen_card", "top_up"]}).to_csv(tmp_path / "t.csv", index=False)
    mapping = ColumnMapping(format="table", text="text", labels=["category"], default_system_prompt="Intent?")
    result = _clean(read_raw_folder(tmp_path, mapping), DataConfig(mapping=mapping))
    assert [json.loads(r.output) for r in result.records] == [{"category": "lost_or_stolen_card"}, {"category": "top_up"}]


def test_empty_raw_folder_names_the_folder(tmp_path):
    with pytest.raises(RawDataError, match=f"no raw files under {tmp_path}"):
        read_raw_folder(tmp_path, ColumnMapping())


def test_file_that_is_not_jsonl_names_file_and_problem(tmp_path):
    (tmp_path / "notes.jsonl").write_text("this is not json\nneither is this\n")
    with pytest.raises(RawDataError, match=r"notes\.jsonl: not a JSONL file: none of its 2 lines"):
        read_raw_folder(tmp_path, ColumnMapping())


def test_wholly_non_utf8_file_names_file(tmp_path):
    (tmp_path / "latin.jsonl").write_bytes('{"input": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(RawDataError, match=r"latin\.jsonl: not UTF-8 text: none of its 1 lines decodes"):
        read_raw_folder(tmp_path, ColumnMapping())


def test_one_non_utf8_line_quarantines_that_line_only(tmp_path):
    good = json.dumps(seed_row("My invoice shows a double charge"))
    bad = json.dumps(seed_row("Le caf\u00e9 is closed, refund me")).replace("\\u00e9", "\xe9")
    (tmp_path / "mixed.jsonl").write_bytes(good.encode() + b"\n" + bad.encode("latin-1") + b"\n")
    result = _clean(read_raw_folder(tmp_path, ColumnMapping()))
    assert len(result.records) == 1
    [q] = result.rejected
    assert (q.file, q.row, q.reason) == ("mixed.jsonl", 2, "not_utf8")
    assert "byte 0xe9" in q.message and "caf\\xe9" in q.raw  # the raw bytes are kept, escaped


def test_every_unreadable_file_is_named_at_once(tmp_path):
    (tmp_path / "a.jsonl").write_text("not json\n")
    (tmp_path / "b.parquet").write_text("not parquet")
    with pytest.raises(RawDataError, match=r"2 raw files cannot be read:\n  a\.jsonl: .*\n  b\.parquet: ") as e:
        read_raw_folder(tmp_path, ColumnMapping())
    assert [f for f, _ in e.value.problems] == ["a.jsonl", "b.parquet"]


def test_mapping_naming_a_missing_column_names_file_and_column(tmp_path):
    pd.DataFrame({"text": ["I lost my card"], "label": ["card"]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(RawDataError, match=r"t\.csv: .*names \['category'\].*columns are \['label', 'text'\]"):
        read_raw_folder(tmp_path, ColumnMapping(format="table", labels=["category"]))


def test_each_rule_quarantines_with_file_row_and_reason(tmp_path):
    rows = [
        seed_row("A perfectly fine message about billing"),
        {"system_prompt": SYSTEM, "input": "Missing the output entirely"},
        {**seed_row("Output that is not JSON at all"), "output": "category: billing"},
        {**seed_row("Output that is JSON but a list"), "output": "[1, 2]"},
        seed_row("short"),
        seed_row("A perfectly fine message about billing"),  # exact duplicate
        seed_row("a PERFECTLY fine   message about billing"),  # near duplicate
        seed_row("The app crashes on start"),
        seed_row("the app crashes on start", category="technical"),  # conflict: both rows go
    ]
    path = write_jsonl(tmp_path / "raw.jsonl", rows)
    path.write_text(path.read_text() + "{broken json\n" + "[1, 2]\n" + '{"input": "cut off')
    result = _clean(read_raw_folder(tmp_path, ColumnMapping()))
    got = {(q.row, q.reason) for q in result.rejected}
    assert got == {(2, "missing_output"), (3, "output_not_json"), (4, "output_not_object"),
                   (5, "input_too_short"), (6, "exact_duplicate"), (7, "near_duplicate"),
                   (8, "conflicting_duplicate"), (9, "conflicting_duplicate"), (10, "not_json"),
                   (11, "not_an_object"), (12, "truncated_line")}
    assert [q.row for q in result.rejected] == sorted(q.row for q in result.rejected)  # input order
    assert all(q.message.startswith(f"raw.jsonl row {q.row}: {q.reason}: ") for q in result.rejected)
    assert result.raw_rows == len(result.records) + len(result.rejected) == 12
    assert [r.row for r in result.records] == [1]
    assert next(q for q in result.rejected if q.row == 10).raw == "{broken json"
    assert "raw.jsonl row 8, raw.jsonl row 9" in next(q for q in result.rejected if q.row == 8).message


def test_token_limit_uses_the_real_tokenizer(tmp_path, tokenizer):
    write_jsonl(tmp_path / "r.jsonl", [seed_row("word " * 10), seed_row("word " * 400)])
    cfg = DataConfig(max_tokens=200)
    result = clean(read_raw_folder(tmp_path, ColumnMapping()), cfg, lambda m: count_tokens(tokenizer, m))
    assert [q.reason for q in result.rejected] == ["too_many_tokens"]
    assert "the limit is 200" in result.rejected[0].message


def test_split_is_stable_as_data_grows():
    texts = [f"My order number {i} has not arrived yet" for i in range(300)]
    before = {t: split_of(t, 0.1, 0.1) for t in texts}
    more = texts + [f"Another new complaint number {i}" for i in range(300)]
    after = {t: split_of(t, 0.1, 0.1) for t in more}
    assert all(after[t] == s for t, s in before.items())
    counts = {s: list(before.values()).count(s) for s in ("train", "val", "test")}
    assert 15 < counts["test"] < 50 and 15 < counts["val"] < 50  # ~10% each, by hash
    assert split_of("Hello THERE  friend", 0.1, 0.1) == split_of("hello there friend", 0.1, 0.1)


def test_sample_data_loses_nothing_and_quarantines_each_bad_row(tmp_path, tokenizer):
    rows = read_raw_folder(SAMPLE_RAW, ColumnMapping())
    result = clean(rows, DataConfig(), lambda m: count_tokens(tokenizer, m))
    stats = write_dataset(result, tmp_path)
    assert stats["raw_rows"] == stats["kept"] + stats["quarantined"] == len(rows)
    assert stats["reasons"] == {"exact_duplicate": 2, "input_too_short": 2, "missing_input": 1,
                                "missing_output": 3, "near_duplicate": 2, "output_not_json": 2}
    quarantine = [json.loads(line) for line in open(tmp_path / "quarantine.jsonl")]
    assert len(quarantine) == stats["quarantined"] and all(q["reason"] and q["raw"] for q in quarantine)
    assert inputs_shared_between_splits(tmp_path) == {}
    assert min(stats["splits"].values()) > 30
    # The OpenAI-format files load with `datasets` and carry only `messages`.
    from datasets import load_dataset

    ds = load_dataset("json", data_files=str(tmp_path / "train.jsonl"), split="train")
    assert ds.column_names == ["messages"] and len(ds) == stats["splits"]["train"]

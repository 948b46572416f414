"""Split policies on the real BANKING77 files: the official test file as the test split, k-shot sampling."""

import json
from collections import Counter

import pytest

from finetune_pipeline.lib import PROJECT_ROOT
from finetune_pipeline.lib.config import (
    ColumnMapping,
    ConfigError,
    DataConfig,
    SplitConfig,
    load_config,
)
from finetune_pipeline.lib.data.cleaning import clean, normalise_text, write_dataset
from finetune_pipeline.lib.data.raw_files import read_raw_folder
from finetune_pipeline.lib.data.splits import UNUSED
from finetune_pipeline_tests.helpers import write_config

BANKING77_RAW = PROJECT_ROOT / "data" / "banking77" / "raw"
TABLE = ColumnMapping(format="table", text="text", labels=["category"], default_system_prompt="Classify.")


@pytest.fixture(scope="module")
def banking_rows():
    return read_raw_folder(BANKING77_RAW, TABLE)


def _clean(rows, **split):
    cfg = DataConfig(mapping=TABLE, split=SplitConfig(**split))
    # A fixed token count: the split rules do not depend on the tokenizer.
    return clean(rows, cfg, lambda messages: 40, files=["train.csv", "test.csv"])


def test_test_file_is_the_whole_test_split_and_nothing_of_it_is_trained_on(banking_rows, tmp_path):
    result = _clean(banking_rows, policy="test_file", test_file="test.csv")
    test = result.split("test")
    # The official test set as published: all 3,080 rows, its one repeated query included.
    assert len(test) == 3080 and {r.file for r in test} == {"test.csv"}
    assert len({normalise_text(r.user_input) for r in test}) == 3079
    # Seven training queries equal a test query: quarantined as leaks, with the test row named.
    leaks = [q for q in result.rejected if q.reason == "duplicate_of_test_row"]
    assert len(leaks) == 7 and all(q.file == "train.csv" and "test.csv row" in q.message for q in leaks)
    test_inputs = {normalise_text(r.user_input) for r in test}
    assert not any(normalise_text(r.user_input) in test_inputs for r in result.records if r.split != "test")
    # Nothing lost: every raw row is kept once or quarantined with a reason.
    assert len(result.records) + len(result.rejected) == result.raw_rows == 13083
    assert result.split_counts()["train"] + result.split_counts()["val"] == len(result.records) - 3080
    stats = write_dataset(result, tmp_path)
    assert stats["split_policy"] == {"policy": "test_file", "test_file": "test.csv"}


def test_k_shot_draws_k_per_class_with_a_fixed_seed(banking_rows, tmp_path):
    result = _clean(banking_rows, policy="test_file", test_file="test.csv", train_per_class=10, val_per_class=1)
    counts = result.split_counts()
    assert counts["train"] == 770 and counts["val"] == 77 and counts["test"] == 3080
    per_class = Counter(json.loads(r.output)["category"] for r in result.split("train"))
    assert len(per_class) == 77 and set(per_class.values()) == {10}
    # Rows not drawn stay accounted for: kept as unused, listed in sources.jsonl.
    assert counts[UNUSED] == len(result.records) - 770 - 77 - 3080 > 8000
    write_dataset(result, tmp_path)
    sources = Counter(json.loads(line)["split"] for line in open(tmp_path / "sources.jsonl"))
    assert sources[UNUSED] == counts[UNUSED]
    assert sum(1 for _ in open(tmp_path / "train.jsonl")) == 770
    assert sum(1 for _ in open(tmp_path / "unused.jsonl")) == counts[UNUSED]

    def drawn(seed):
        r = _clean(banking_rows, policy="test_file", test_file="test.csv", train_per_class=10, seed=seed)
        return {(x.file, x.row) for x in r.split("train")}

    first = {(x.file, x.row) for x in result.split("train")}
    assert drawn(42) == first  # same seed, same examples
    assert len(drawn(7) & first) < 200  # another seed draws mostly others


def test_k_shot_reports_classes_with_fewer_rows_than_k(banking_rows):
    result = _clean(banking_rows[:300], train_per_class=50)  # hash split; few rows per class here
    info = result.sampling["train"]
    assert info["classes_with_fewer"] and all(n < 50 for n in info["classes_with_fewer"].values())
    assert info["drawn"] == result.split_counts()["train"]


def test_hash_split_unchanged_by_default(banking_rows):
    result = _clean(banking_rows)
    assert result.sampling == {"policy": "hash"}
    assert {r.split for r in result.records} == {"train", "val", "test"}
    # Test-file rows are split by hash like any other when the policy is hash.
    assert {r.file for r in result.split("test")} == {"train.csv", "test.csv"}


def test_split_config_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="data.split.test_file"):
        load_config(write_config(tmp_path, BANKING77_RAW, data={"split": {"policy": "test_file"}}))
    with pytest.raises(ConfigError, match="data.split.policy"):
        load_config(write_config(tmp_path, BANKING77_RAW, data={"split": {"policy": "random"}}))


def test_a_test_file_that_is_not_a_raw_file_is_named(banking_rows):
    with pytest.raises(ValueError, match="'tst.csv' is not a raw file.*test.csv"):
        _clean(banking_rows, policy="test_file", test_file="tst.csv")


def test_k_shot_needs_the_class_in_the_output(tmp_path):
    from finetune_pipeline.lib.data.raw_files import RawRow

    rows = [RawRow(file="a.jsonl", row=i + 1, data={"text": f"message number {i}", "intent": "x"})
            for i in range(20)]
    mapping = ColumnMapping(format="table", labels=["intent"])
    cfg = DataConfig(mapping=mapping, split=SplitConfig(train_per_class=2, class_field="category"))
    with pytest.raises(ValueError, match="no 'category' in their JSON output.*a.jsonl row"):
        clean(rows, cfg, lambda m: 10)

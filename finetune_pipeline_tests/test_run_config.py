"""`finetune-pipeline run --config` and the launchpad's config_path run the whole graph for a config file."""

import csv

import dagster as dg
import pytest

from finetune_pipeline import cli
from finetune_pipeline.definitions import defs
from finetune_pipeline.lib import PROJECT_ROOT
from finetune_pipeline.lib.config import load_config
from finetune_pipeline_tests.helpers import materialized, write_config

# Both tests run the training graph in Dagster (the first trains).
pytestmark = pytest.mark.slow

BANKING77_RAW = PROJECT_ROOT / "data" / "banking77" / "raw"
CLASSES = ("card_arrival", "exchange_rate", "lost_or_stolen_card")


def _subset(src, dst, per_class):
    """The first `per_class` rows of three intents of a BANKING77 file."""
    with open(src) as f:
        rows = list(csv.DictReader(f))
    keep = [r for c in CLASSES for r in [x for x in rows if x["category"] == c][:per_class]]
    with open(dst, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["text", "category"])
        w.writeheader()
        w.writerows(keep)


@pytest.fixture
def banking_config(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    raw.mkdir()
    _subset(BANKING77_RAW / "train.csv", raw / "train.csv", 30)
    _subset(BANKING77_RAW / "test.csv", raw / "test.csv", 4)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.delenv("FINETUNE_PIPELINE_CONFIG", raising=False)  # restored after the test
    return write_config(
        tmp_path, raw,
        data={"raw_dir": str(raw), "min_train_rows": 5,
              "mapping": {"format": "table", "labels": ["category"], "default_system_prompt": "Classify."},
              "split": {"policy": "test_file", "test_file": "test.csv", "train_per_class": 5, "val_per_class": 1}},
        eval={"limit": 0, "max_new_tokens": 12, "batch_size": 8,
              "classification": {"field": "category", "constrained": True}},
        promotion={"primary_metric": "classification/accuracy"})


def test_run_config_materializes_the_graph_and_reports_classification(banking_config, capsys):
    assert cli.main(["run", "--config", str(banking_config)]) == 0
    out = capsys.readouterr().out
    assert "=== finetune-pipeline run ===" in out and f"config: {banking_config}" in out
    # 3 classes x 5 shots in train, 1 each in val, the 12 test-file rows as the test split.
    assert "'train': 15, 'val': 3, 'test': 12" in out
    assert "classification/accuracy" in out and "constrained/valid_label" in out

    # The UI's view of it: model_eval's metadata carries the confusion matrices as PNGs.
    with dg.DagsterInstance.get() as instance:
        versions = sorted(instance.get_dynamic_partitions("model_versions"))
        record = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("model_eval"), asset_partitions=[versions[1]]), limit=1)
        meta = record.records[0].asset_materialization.metadata
    assert meta["confusion_category"].value.startswith("![confusion category](data:image/png;base64,")
    assert "confusion_category_constrained" in meta
    assert meta["constrained_valid_label"].value == 1.0


def test_the_launchpad_config_path_selects_the_same_config(banking_config):
    # What the launchpad sends when config_path is typed into the settings resource.
    run_config = {"resources": {"settings": {"config": {"config_path": str(banking_config)}}}}
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("train_and_merge").execute_in_process(
            instance=instance, run_config=run_config, asset_selection=[dg.AssetKey(k) for k in ("raw_examples", "base_model", "training_dataset")])
    assert materialized(result) == ["base_model", "raw_examples", "training_dataset"]
    dataset = result.output_for_node("training_dataset")
    assert dataset.info["splits"] == {"train": 15, "val": 3, "test": 12, "unused": 90 - 15 - 3}
    assert dataset.path.startswith(str(load_config(banking_config).artifacts_dir))

"""The whole graph materialized in process through a real (temporary) Dagster instance."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from finetune_pipeline import cli
from finetune_pipeline.definitions import defs
from finetune_pipeline.lib.config import load_config
from finetune_pipeline_tests.helpers import (
    SAMPLE_RAW,
    TRAIN_AND_MERGE,
    latest_materialization,
    materialized,
    write_config,
)


def _materialization(instance, asset: str, partition: str | None = None):
    return latest_materialization(instance, asset, partition)


@pytest.mark.slow
def test_full_graph_then_cache_hit_then_lineage(tmp_path, monkeypatch, instance, capsys):
    config_path = write_config(tmp_path, SAMPLE_RAW, baselines=[{"shots": 2, "constrained": True}])
    monkeypatch.setenv("FINETUNE_PIPELINE_CONFIG", str(config_path))

    result = defs.resolve_job_def("train_and_merge").execute_in_process(instance=instance)
    assert materialized(result) == TRAIN_AND_MERGE
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"rows_accounted_for": True, "no_input_shared_between_splits": True, "min_train_rows": True,
                      "recommended_train_rows": False, "merged_matches_base_plus_adapter": True}

    # Training ran in a Pipes child and streamed its progress into the run log.
    logs = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any("step 4/4" in m and "tokens/s" in m and "ETA" in m for m in logs)
    adapter_meta = _materialization(instance, "lora_adapter").metadata
    assert adapter_meta["cache_hit"].value is False
    assert adapter_meta["loss_curve"].value.startswith("![loss curve](data:image/png;base64,")
    dataset_meta = _materialization(instance, "training_dataset").metadata
    assert dataset_meta["raw_rows"].value == dataset_meta["kept"].value + dataset_meta["quarantined"].value == 672

    # The base, the prompting baseline and the fine-tune are partitions of both eval suites; evaluate each by name.
    versions = sorted(instance.get_dynamic_partitions("model_versions"))
    assert versions[0] == "base-tiny-random" and versions[1].startswith("lora-")
    assert versions[2].startswith("prompt-tiny-random-2shot-json-") and len(versions) == 3
    eval_job = defs.resolve_job_def("evaluate_version")
    for version in versions:
        assert materialized(eval_job.execute_in_process(instance=instance, partition_key=version)) == [
            f"general_eval[{version}]", f"model_eval[{version}]"]
        meta = _materialization(instance, "model_eval", version).metadata
        predictions = [json.loads(line)["prediction"] for line in open(meta["predictions"].value)]
        valid = sum(isinstance(_json_or_none(p), dict) for p in predictions) / len(predictions)
        assert meta["n"].value == len(predictions) == 6 and meta["valid_json"].value == pytest.approx(valid)
        assert "accuracy_category" in meta and version in meta["report"].value

    # Second run through the CLI: nothing changed, so the adapter is reused.
    assert cli.main(["demo", "--config", str(config_path)]) == 0
    out = capsys.readouterr().out
    assert "adapter: CACHE HIT (reused, not retrained)" in out
    assert _materialization(instance, "lora_adapter").metadata["cache_hit"].value is True
    assert all(f"| {v} |" in out for v in versions)
    # The demo ends with the leaderboard's verdict and the champion the promote job chose.
    verdict = out.split("verdict:", 1)[1]
    assert f"fine-tuned {versions[1]}" in verdict and "Forgetting: " in verdict and "Cost to run: " in verdict
    assert "champion: " in out
    board = _materialization(instance, "leaderboard").metadata
    assert board["verdict"].value.startswith("- ") and "general" in board["suites"].value

    # Lineage from the fine-tuned version back to the raw file.
    assert cli.main(["lineage", versions[1], "--config", str(config_path)]) == 0
    text = capsys.readouterr().out
    cfg = load_config(config_path)
    adapter_key = versions[1].removeprefix("lora-")
    assert f"lora_adapter {adapter_key}" in text
    assert "training_dataset " in text and "raw_examples " in text
    assert "support_tickets.jsonl" in text and "sha256=" in text
    assert "spec: tiny-random" in text and "'learning_rate': 0.005" in text
    assert str(cfg.artifacts_dir) in text


def _json_or_none(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None


@pytest.mark.slow
def test_blocking_check_stops_training_on_too_little_data(tmp_path, monkeypatch, instance):
    config_path = write_config(tmp_path, SAMPLE_RAW, data={"raw_dir": str(SAMPLE_RAW), "min_train_rows": 10_000})
    monkeypatch.setenv("FINETUNE_PIPELINE_CONFIG", str(config_path))
    result = defs.resolve_job_def("train_and_merge").execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks["min_train_rows"] is False
    assert instance.get_latest_materialization_event(dg.AssetKey("lora_adapter")) is None


@pytest.mark.slow
def test_empty_raw_folder_fails_with_the_folder_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    (tmp_path / "empty").mkdir()
    config_path = write_config(tmp_path, tmp_path / "empty")
    assert cli.main(["demo", "--config", str(config_path)]) == 1
    assert f"no raw files under {tmp_path / 'empty'}" in capsys.readouterr().err


def test_unknown_version_lineage_is_a_clear_error(tmp_path, capsys):
    config_path = write_config(tmp_path, SAMPLE_RAW)
    assert cli.main(["lineage", "lora-doesnotexist", "--config", str(config_path)]) == 2
    assert "'lora-doesnotexist' is not registered" in capsys.readouterr().err

"""A full fine-tune (train.method: full) of the tiny model through Dagster becomes a model version of kind `full`:
registered without a merge or a copy of its weights, evaluated, on the leaderboard with its cost, champion, served."""

from __future__ import annotations

import dagster as dg
import pytest

from finetune_pipeline.definitions import defs
from finetune_pipeline.lib import stages
from finetune_pipeline.lib.config import config_from_dict, load_config
from finetune_pipeline.lib.models.device import describe_device
from finetune_pipeline.lib.stages.promotion import retrain_check
from finetune_pipeline.lib.versions import kinds
from finetune_pipeline.lib.versions.leaderboard import Leaderboard
from finetune_pipeline.lib.versions.version import ArtifactAddress
from finetune_pipeline_tests.helpers import SAMPLE_RAW, TRAIN_AND_MERGE, materialized, write_config


@pytest.mark.slow
def test_full_fine_tune_is_a_version_on_the_leaderboard_and_can_be_champion(tmp_path, monkeypatch, instance):
    config_path = write_config(tmp_path, SAMPLE_RAW, train={"method": "full", "max_steps": 2, "eval_steps": 2},
                               eval={"limit": 4})
    monkeypatch.setenv("FINETUNE_PIPELINE_CONFIG", str(config_path))
    cfg = load_config(config_path)

    result = defs.resolve_job_def("train_and_merge").execute_in_process(instance=instance)
    assert materialized(result) == TRAIN_AND_MERGE
    merge_check = next(c for c in result.get_asset_check_evaluations()
                       if c.check_name == "merged_matches_base_plus_adapter")
    assert merge_check.passed and merge_check.metadata["applicable"].value is False
    assert "not applicable: a full fine-tune" in merge_check.metadata["reason"].value

    # Registered as kind full, its weights the training artifact's own folder; merged_model copied nothing.
    key = next(k for k in instance.get_dynamic_partitions("model_versions") if k.startswith("full-"))
    version = stages.registry(cfg).get(key)
    assert version.kind == "full" and version.artifact.asset == "lora_adapter"
    trained = stages.store(cfg).find("lora_adapter", version.artifact.key)
    assert version.weights_dir(stages.store(cfg)) == trained.dir and (trained.dir / "model.safetensors").is_file()
    merged = stages.store(cfg).find("merged_model", instance.get_latest_materialization_event(
        dg.AssetKey("merged_model")).asset_materialization.metadata["artifact_key"].value)
    assert merged.info["version_key"] == key and not list(merged.dir.glob("*.safetensors"))

    eval_run = defs.resolve_job_def("evaluate_version").execute_in_process(instance=instance, partition_key=key)
    assert materialized(eval_run) == [f"general_eval[{key}]", f"model_eval[{key}]"]
    promote = defs.resolve_job_def("promote").execute_in_process(instance=instance)
    assert materialized(promote) == ["champion", "leaderboard", "serving_spec"]

    board = Leaderboard.load(stages.store(cfg).find("leaderboard", _artifact_key(instance, "leaderboard")).dir)
    row = next(r for r in board.rows if r.version == key)
    assert row.kind == "full" and row.metrics["n"] == 4
    # Trained on this CPU: device-hours x the cpu price; the eval's latency priced on the same table.
    assert row.train_seconds > 0 and row.tokens_trained > 0 and row.device == describe_device(processes=1).label()
    assert row.cost_usd == pytest.approx(row.device_hours * cfg.costs.hourly_usd["cpu"], abs=1e-6)
    assert row.inference_device == describe_device(processes=1).label()
    assert row.usd_per_1k_requests == pytest.approx(
        row.seconds_per_request * 1000 / 3600 * cfg.costs.hourly_usd["cpu"], rel=0.01)
    assert f"| {key} | full |" in board.markdown()

    champion = instance.get_latest_materialization_event(dg.AssetKey("champion")).asset_materialization.metadata
    assert champion["champion"].value == key
    spec = instance.get_latest_materialization_event(dg.AssetKey("serving_spec")).asset_materialization.metadata
    # Served like a merged model: vLLM loads the training artifact's folder under the version's name.
    assert spec["kind"].value == "full"
    assert f"{trained.dir} --served-model-name {key}" in spec["vllm_command"].value

    # The nightly check reads what the full fine-tune was trained from: nothing changed, nothing to retrain.
    check = retrain_check(cfg)
    assert not check.needed and check.last_version == key, check.reason


def _artifact_key(instance, asset: str) -> str:
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    return event.asset_materialization.metadata["artifact_key"].value


def test_full_version_is_priced_from_its_training_lineage_and_served_whole(tmp_path):
    cfg = config_from_dict({"artifacts_root": str(tmp_path / "artifacts"), "serving": {"mode": "lora"},
                            "costs": {"hourly_usd": {"cpu": 0.1, "h100": 4.0}}}, tmp_path)
    device = {"type": "cuda", "name": "NVIDIA H100 80GB HBM3", "count": 2}
    with stages.store(cfg).write("lora_adapter", "t1", inputs=[], config={}, code_version="2") as out:
        out.info.update({"method": "full", "train_seconds": 900, "tokens_seen": 5000, "device": device})
    version = stages.registry(cfg).register("full-t1", "full", weights=".",
                                            artifact=ArtifactAddress(asset="lora_adapter", key="t1"))
    cost = kinds.get("full").training_cost(version, stages.store(cfg), cfg.costs)
    assert cost.cost_usd == pytest.approx(0.25 * 2 * 4.0) and cost.device == "NVIDIA H100 80GB HBM3 x2"
    spec = kinds.get("full").serving_spec(version, stages.store(cfg), cfg.serving)
    assert str(stages.store(cfg).dir("lora_adapter", "t1")) in spec.vllm_command
    assert "--enable-lora" not in spec.vllm_command
    assert "does not apply to a full fine-tune" in spec.note
    with pytest.raises(ValueError, match="a full version needs the path of its weights"):
        stages.registry(cfg).register("full-t2", "full")

"""QLoRA for real on this CPU machine (bitsandbytes 0.50 has a CPU backend): a 4-bit nf4 base, LoRA on top.

(a) the tiny model through Dagster: adapter -> merged (the blocking merge check passing on the unquantised
    base) -> eval, with the quantisation settings and the device in the adapter's lineage;
(b) the real SmolLM2-135M weights, a few steps: Linear4bit layers, a finite loss, and the merge check.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from finetune_pipeline.definitions import defs
from finetune_pipeline.lib.evaluation.merge_check import merged_matches_adapter
from finetune_pipeline.lib.models.base_models import resolve_base_model
from finetune_pipeline.lib.models.merge import merge_adapter
from finetune_pipeline.lib.training.config import TrainConfig
from finetune_pipeline.lib.training.engine import train_model
from finetune_pipeline.lib.training.spec import TrainSpec
from finetune_pipeline_tests.helpers import (
    MODEL_CACHE,
    SAMPLE_RAW,
    TRAIN_AND_MERGE,
    latest_materialization,
    materialized,
    write_config,
)
from finetune_pipeline_tests.test_training_engine_methods import _chat

pytestmark = pytest.mark.slow
QLORA = {"quant_type": "nf4", "double_quant": True, "compute_dtype": "bfloat16", "optim": "paged_adamw_32bit"}


def _latest(instance, asset: str, partition: str | None = None):
    return latest_materialization(instance, asset, partition).metadata


def test_qlora_on_the_tiny_model_through_dagster_adapter_merged_eval(tmp_path, monkeypatch, instance):
    monkeypatch.setenv("FINETUNE_PIPELINE_CONFIG", str(write_config(tmp_path, SAMPLE_RAW, train={"method": "qlora"})))

    result = defs.resolve_job_def("train_and_merge").execute_in_process(instance=instance)
    assert materialized(result) == TRAIN_AND_MERGE
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks["merged_matches_base_plus_adapter"] is True

    info = json.loads(Path(_latest(instance, "lora_adapter")["lineage"].value).read_text())["info"]
    assert info["method"] == "qlora" and info["quantization"] == QLORA
    assert info["device"]["type"] == "cpu" and info["device"]["count"] == 1 and info["device"]["name"]
    assert info["dtype"] == "float32" and info["attn_implementation"] == "sdpa"
    # Merged into the unquantised base: a plain float model, no quantisation config, in the training dtype.
    merged = Path(_latest(instance, "merged_model")["artifact_path"].value)
    config = json.loads((merged / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "float32"

    version = next(v for v in instance.get_dynamic_partitions("model_versions") if v.startswith("lora-"))
    evaluation = defs.resolve_job_def("evaluate_version").execute_in_process(instance=instance, partition_key=version)
    assert materialized(evaluation) == [f"general_eval[{version}]", f"model_eval[{version}]"]
    assert _latest(instance, "model_eval", version)["n"].value == 6


@pytest.mark.smollm2
def test_qlora_on_the_real_smollm2_weights_trains_4bit_and_merges_to_the_same_greedy_outputs(tmp_path):
    import bitsandbytes as bnb
    from transformers import TrainerCallback

    class FourBitLayers(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]

    model_dir = resolve_base_model("embedded:smollm2-135m-instruct", MODEL_CACHE).path
    train = TrainConfig(method="qlora", max_steps=3, batch_size=2, eval_steps=3, logging_steps=1,
                        learning_rate=2e-3)
    val = [_chat(100 + i) for i in range(2)]
    spec = TrainSpec(base_model_dir=str(model_dir),
                     train_file=_jsonl(tmp_path / "train.jsonl", [_chat(i) for i in range(6)]),
                     val_file=_jsonl(tmp_path / "val.jsonl", val),
                     output_dir=str(tmp_path / "out"), work_dir=str(tmp_path / "work"), train=train)
    seen = FourBitLayers()
    result = train_model(spec, callbacks=[seen])

    assert len(seen.layers) == 30 * 7  # q, k, v, o, gate, up, down in each of the 30 layers
    assert {m.weight.quant_type for m in seen.layers} == {"nf4"}
    assert all(m.weight.quant_state.nested for m in seen.layers)  # double quantisation
    losses = [p["loss"] for p in result["loss_curve"] if "loss" in p]
    assert result["method"] == "qlora" and result["steps"] == 3 and len(losses) == 3
    assert all(math.isfinite(loss) for loss in losses) and math.isfinite(result["eval_loss"])

    # The blocking check's function, on the adapter merged into the unquantised base.
    merge_adapter(model_dir, tmp_path / "out", tmp_path / "merged")
    same, rows = merged_matches_adapter(model_dir, tmp_path / "out", tmp_path / "merged", [r["messages"] for r in val],
                                        max_new_tokens=12)
    assert same and all(r["merged"] for r in rows), rows


def _jsonl(path: Path, rows: list) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)

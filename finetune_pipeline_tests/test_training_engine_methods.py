"""Training methods and guards: full fine-tuning, QLoRA's bitsandbytes check, early stopping with the best
checkpoint loaded, save_total_limit, the general-instruction mix and its lineage, config errors.

Runs `train_model` in process on the tiny model and a few hand-made rows, so each test takes seconds.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from finetune_pipeline.lib import stages
from finetune_pipeline.lib.config import ConfigError, TrainConfig, load_config
from finetune_pipeline.lib.data.general_instructions import read_general_examples
from finetune_pipeline.lib.models.base_models import load_model
from finetune_pipeline.lib.training.engine import ORDER_FILE, train_model
from finetune_pipeline.lib.training.spec import TrainSpec
from finetune_pipeline_tests.helpers import SAMPLE_RAW, write_config, write_jsonl

CATEGORIES = ["billing", "technical", "account", "shipping", "returns", "product"]


def _chat(i: int) -> dict:
    category = CATEGORIES[i % len(CATEGORIES)]
    return {"messages": [{"role": "system", "content": "Classify. Reply with JSON."},
                         {"role": "user", "content": f"Ticket {i}: a question about {category} number {i * 7}"},
                         {"role": "assistant", "content": json.dumps({"category": category})}]}


def _spec(tmp_path: Path, model_dir: Path, **train) -> TrainSpec:
    tc = TrainConfig(**{"max_steps": 2, "batch_size": 2, "eval_steps": 1, "logging_steps": 1, "learning_rate": 0.005,
                        **train})
    return TrainSpec(base_model_dir=str(model_dir),
                     train_file=str(write_jsonl(tmp_path / "train.jsonl", [_chat(i) for i in range(24)])),
                     val_file=str(write_jsonl(tmp_path / "val.jsonl", [_chat(100 + i) for i in range(4)])),
                     output_dir=str(tmp_path / "out"), work_dir=str(tmp_path / "work"), train=tc)


@pytest.mark.slow
def test_full_fine_tuning_trains_every_weight_and_saves_a_plain_model(tmp_path, tiny_model_dir):
    result = train_model(_spec(tmp_path, tiny_model_dir, method="full", learning_rate=1e-3))
    assert result["method"] == "full" and result["steps"] == 2
    base, tuned = load_model(tiny_model_dir), load_model(tmp_path / "out")  # plain transformers, no PEFT
    assert result["trainable_parameters"] == sum(p.numel() for p in base.parameters())
    changed = [n for n, p in tuned.state_dict().items() if not torch.equal(p, base.state_dict()[n])]
    assert any("mlp" in n for n in changed) and any("self_attn" in n for n in changed)
    assert tuned.config.use_cache is True  # turned off for training only
    assert (tmp_path / "out" / "tokenizer_config.json").is_file()


def test_qlora_without_bitsandbytes_fails_before_any_model_load_or_launch(tmp_path, monkeypatch):
    # find_spec sees no bitsandbytes (QLoRA itself runs on CPU: test_qlora.py).
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    cfg = load_config(write_config(tmp_path, SAMPLE_RAW, train={"method": "qlora"}))
    with pytest.raises(RuntimeError, match="train.method: qlora needs the bitsandbytes package"):
        stages.lora_adapter(cfg, base=None, dataset=None, launch=_must_not_launch)  # refs never touched
    with pytest.raises(RuntimeError, match="needs the bitsandbytes package"):
        train_model(_spec(tmp_path, Path("/nonexistent-model"), method="qlora"))


def _must_not_launch(spec_path):
    raise AssertionError("QLoRA without bitsandbytes must fail before the child is launched")


@pytest.mark.slow
def test_early_stopping_keeps_the_best_checkpoint_and_at_most_save_total_limit(tmp_path, tiny_model_dir):
    # A learning rate this high (for LoRA) makes the eval loss jump around and stop improving within a few steps.
    spec = _spec(tmp_path, tiny_model_dir, max_steps=30, learning_rate=30.0, early_stopping_patience=2,
                 save_total_limit=1)
    result = train_model(spec)
    evals = [(p["step"], p["eval_loss"]) for p in result["loss_curve"] if "eval_loss" in p]
    best_step, best_loss = min(evals, key=lambda e: e[1])
    assert result["stopped_early"] and result["steps"] == evals[-1][0] < 30
    assert result["steps"] - best_step == 2  # patience 2: two evals without improvement, then stop
    assert result["best_step"] == best_step and result["eval_loss"] == pytest.approx(best_loss, abs=1e-4)
    # The saved adapter is the best checkpoint's, not the last step's.
    saved = load_file(str(tmp_path / "out" / "adapter_model.safetensors"))
    best = load_file(str(tmp_path / "work" / f"checkpoint-{best_step}" / "adapter_model.safetensors"))
    assert saved.keys() == best.keys() and all(torch.equal(saved[k], best[k]) for k in saved)
    kept = sorted(p.name for p in (tmp_path / "work").glob("checkpoint-*"))
    assert f"checkpoint-{best_step}" in kept and len(kept) <= 2  # the limit (1) plus the best


@pytest.mark.slow
def test_general_instruction_mix_is_trained_on_and_recorded_in_lineage(tmp_path):
    general = write_jsonl(tmp_path / "general.jsonl", [
        {"messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                      {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."}]} for i in range(40)])
    cfg = load_config(write_config(tmp_path, SAMPLE_RAW, data={"val_fraction": 0.03, "test_fraction": 0.03},
                                   # One whole epoch, so every mixed-in example is seen whatever the
                                   # sampler's order (grouped padding on CPU clusters the short ones).
                                   train={"general_mix_ratio": 0.05, "general_mix_source": str(general),
                                          "max_steps": -1, "epochs": 1, "batch_size": 16, "eval_steps": 50}))
    base = stages.base_model(cfg)
    dataset = stages.training_dataset(cfg, stages.raw_examples(cfg), base)
    adapter = stages.lora_adapter(cfg, base, dataset, launch=_in_process)

    n_train = dataset.info["splits"]["train"]
    assert adapter.info["general_examples"] == round(0.05 * n_train)
    lineage = adapter.lineage()
    assert {"asset": "general instructions", "path": str(general),
            "sha256": __import__("hashlib").sha256(general.read_bytes()).hexdigest()} in lineage["inputs"]
    assert lineage["config"]["general_mix_ratio"] == 0.05
    seen = [i for line in (adapter.dir / ORDER_FILE).read_text().splitlines() for i in json.loads(line)["ids"]]
    # ids past the task rows are general examples: each mixed-in one was trained on, once.
    assert sum(1 for i in seen if i >= n_train) == round(0.05 * n_train)
    assert sorted(i for i in seen if i < n_train) == list(range(n_train))


def _in_process(spec_path: Path) -> dict:
    return train_model(TrainSpec.load(spec_path))


def test_a_bad_general_instruction_row_names_file_row_and_rule(tmp_path):
    path = write_jsonl(tmp_path / "general.jsonl", [
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]},
        {"messages": [{"role": "user", "content": "No answer here"}]}])
    with pytest.raises(ValueError, match=f"{path}:2: the last turn must be the assistant's answer"):
        read_general_examples(path)


@pytest.mark.parametrize("train, message", [
    ({"eval_steps": 4, "save_steps": 6}, r"save_steps \(6\) must be a positive multiple of train.eval_steps \(4\)"),
    ({"method": "dora"}, "train.method must be lora, qlora or full"),
    ({"general_mix_ratio": 1.5}, r"general_mix_ratio must be in \[0, 1\)"),
    ({"num_processes": 0}, "num_processes must be >= 1"),
])
def test_bad_training_config_is_refused_with_the_field_named(tmp_path, train, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write_config(tmp_path, SAMPLE_RAW, train=train))

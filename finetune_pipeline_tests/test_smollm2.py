"""Integration with the real embedded SmolLM2-135M-Instruct weights (offline)."""

from __future__ import annotations

import json

import pytest

from finetune_pipeline.lib import stages
from finetune_pipeline.lib.config import load_config
from finetune_pipeline.lib.evaluation.generate import generate_batched
from finetune_pipeline.lib.models.base_models import load_model, load_tokenizer
from finetune_pipeline.lib.evaluation.merge_check import merged_matches_adapter
from finetune_pipeline_tests.helpers import SAMPLE_RAW, write_config

pytestmark = [pytest.mark.smollm2, pytest.mark.slow]


@pytest.fixture(scope="module")
def smol_config(tmp_path_factory):
    folder = tmp_path_factory.mktemp("smol")
    path = write_config(folder, SAMPLE_RAW, model={"base_model": "embedded:smollm2-135m-instruct"},
                        train={"max_steps": 3, "batch_size": 4, "eval_steps": 3, "logging_steps": 1,
                               "learning_rate": 0.001})
    return load_config(path)


def test_embedded_model_converts_to_safetensors_and_answers(smol_config):
    base = stages.base_model(smol_config)
    model_dir = base.info["model_dir"]
    config = json.loads(open(f"{model_dir}/config.json").read())
    assert config["architectures"] == ["LlamaForCausalLM"] and "quantization_config" not in config
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir)
    assert model.num_parameters() > 130_000_000
    [answer] = generate_batched(model, tokenizer, [[{"role": "user", "content": "What is the capital of France?"}]],
                                max_new_tokens=12)
    assert "Paris" in answer


def test_lora_on_real_weights_merges_to_the_same_greedy_outputs(smol_config):
    base = stages.base_model(smol_config)
    dataset = stages.training_dataset(smol_config, stages.raw_examples(smol_config), base)
    adapter = stages.lora_adapter(smol_config, base, dataset)
    assert adapter.info["steps"] == 3 and adapter.info["train_loss"] > 0
    merged = stages.merged_model(smol_config, base, adapter)
    same, rows = merged_matches_adapter(base.info["model_dir"], adapter.dir, merged.dir,
                                        stages.sample_val_prompts(dataset, 3), max_new_tokens=16)
    assert same, rows
    assert len(rows) == 3 and all(r["merged"] for r in rows)

"""Assistant-only labels, dynamic padding, and the LoRA training core."""

from __future__ import annotations

import json

import pytest

from finetune_pipeline.lib import stages
from finetune_pipeline.lib.training.collate import (
    IGNORE_INDEX,
    make_collator,
    tokenize_chat,
)

MESSAGES = [
    {"role": "system", "content": "Classify."},
    {"role": "user", "content": "My card was charged twice"},
    {"role": "assistant", "content": '{"category": "billing"}'},
]


def test_loss_only_on_assistant_tokens(tokenizer):
    enc = tokenize_chat(tokenizer, MESSAGES)
    learned = [t for t, label in zip(enc["input_ids"], enc["labels"]) if label != IGNORE_INDEX]
    text = tokenizer.decode(learned)
    assert text.startswith('{"category": "billing"}') and "<|im_end|>" in text
    assert "Classify" not in text and "charged twice" not in text
    # The unmasked tokens are exactly the tail after the generation prompt.
    prompt = tokenizer.apply_chat_template(MESSAGES[:2], tokenize=False, add_generation_prompt=True)
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert all(label == IGNORE_INDEX for label in enc["labels"][:n_prompt])
    assert enc["labels"][n_prompt] != IGNORE_INDEX


def test_collator_pads_to_longest_in_batch_not_max_length(tokenizer):
    short = tokenize_chat(tokenizer, MESSAGES)
    long = tokenize_chat(tokenizer, [MESSAGES[0], {"role": "user", "content": "word " * 40}, MESSAGES[2]])
    batch = make_collator(tokenizer)([short, long])
    assert batch["input_ids"].shape == (2, len(long["input_ids"]))
    pad = len(long["input_ids"]) - len(short["input_ids"])
    assert int(batch["attention_mask"][0].sum()) == len(short["input_ids"])
    assert (batch["labels"][0] == IGNORE_INDEX).sum() >= pad


@pytest.mark.slow
def test_lora_training_in_a_child_process_saves_the_adapter_alone(tiny_config):
    base = stages.base_model(tiny_config)
    raw = stages.raw_examples(tiny_config)
    dataset = stages.training_dataset(tiny_config, raw, base)
    adapter = stages.lora_adapter(tiny_config, base, dataset)
    files = sorted(p.name for p in adapter.dir.iterdir())
    # The adapter alone (no base weights): PEFT's two files, its model card, the examples trained on
    # at each step, our lineage.
    assert files == ["README.md", "adapter_config.json", "adapter_model.safetensors", "examples_seen.jsonl",
                     "lineage.json"]
    info = adapter.info
    assert info["steps"] == 4 and info["eval_loss"] is not None and info["tokens_seen"] > 0
    assert [p["step"] for p in info["loss_curve"] if "loss" in p] == [1, 2, 3, 4]
    config = json.loads((adapter.dir / "adapter_config.json").read_text())
    assert config["r"] == 16 and config["peft_type"] == "LORA"
    # Same inputs and config: a cache hit, not a retrain.
    again = stages.lora_adapter(tiny_config, base, dataset, launch=_must_not_train)
    assert again.cache_hit and again.path == adapter.path


def _must_not_train(spec_path):
    raise AssertionError("an unchanged recipe must not retrain")

"""Padding-free batches change nothing but the speed: the packed loss equals the one-by-one losses.

"Equal" is exact about the reduction: the loss of a batch (packed or not) is
the token-weighted mean of its label tokens' cross-entropy, sum over all
label tokens / their number, which is transformers' own causal-LM reduction.
So the packed loss must equal sum_i(loss_i * n_i) / sum_i(n_i), where loss_i
is example i's own loss computed alone and n_i its number of label tokens;
the unweighted mean of the loss_i is a different number, and the test shows it.
"""

from __future__ import annotations

import logging
import copy

import pytest
import torch

from finetune_pipeline.lib.training.collate import IGNORE_INDEX, tokenize_chat
from finetune_pipeline.lib.training.packing import (
    choose_batching,
    label_only_loss,
    next_token_mask,
    padded_collator,
    padding_free_collator,
)

CONVERSATIONS = [
    ("Classify.", "My card was charged twice", '{"category": "billing"}'),
    ("Classify the customer support message. Reply with JSON only.",
     "The app crashes every time I open the settings page on my phone, since the last update.",
     '{"category": "technical", "sentiment": "negative", "priority": "high"}'),
    ("Classify.", "Where is my parcel?", '{"category": "shipping"}'),
    ("Reply with JSON.", "I love the new lamp, thanks! " * 3, '{"category": "product", "sentiment": "positive"}'),
]


def _examples(tokenizer):
    rows = []
    for system, user, answer in CONVERSATIONS:
        enc = tokenize_chat(tokenizer, [{"role": "system", "content": system}, {"role": "user", "content": user},
                                        {"role": "assistant", "content": answer}])
        rows.append({"input_ids": enc["input_ids"], "labels": enc["labels"]})
    return rows


def _alone(model, example) -> tuple[float, int]:
    """The model's own loss (transformers' reduction) on one example, and its label-token count."""
    ids, labels = torch.tensor([example["input_ids"]]), torch.tensor([example["labels"]])
    with torch.no_grad():
        loss = model(input_ids=ids, labels=labels, use_cache=False).loss
    return float(loss), int((labels[:, 1:] != IGNORE_INDEX).sum())


def _engine_loss(model, batch) -> float:
    """The loss exactly as training computes it: logits only where a label is, then label_only_loss."""
    batch = dict(batch)
    batch.pop("example_ids", None)
    labels = batch.pop("labels")
    with torch.no_grad():
        outputs = model(**batch, use_cache=False)
    return float(label_only_loss(outputs, labels))


@pytest.fixture
def model_on(tiny_lm):
    def load(attention: str):
        model = copy.deepcopy(tiny_lm[0])
        model.set_attn_implementation(attention)
        return model.eval()
    return load


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_loss_equals_token_weighted_mean_of_losses_one_by_one(model_on, tokenizer, attention):
    model = model_on(attention)
    examples = _examples(tokenizer)
    alone = [_alone(model, e) for e in examples]
    token_weighted = sum(loss * n for loss, n in alone) / sum(n for _, n in alone)

    packed = padding_free_collator()(examples)
    assert packed["input_ids"].shape == (1, sum(len(e["input_ids"]) for e in examples))  # one row, no padding
    assert "attention_mask" not in packed  # else the masking utils would not read the position ids
    assert abs(_engine_loss(model, packed) - token_weighted) < 1e-4

    # The padded fallback computes the same number.
    assert abs(_engine_loss(model, padded_collator(tokenizer)(examples)) - token_weighted) < 1e-4

    # The precision matters: examples differ in length, so the plain mean is another number...
    plain_mean = sum(loss for loss, _ in alone) / len(alone)
    assert abs(plain_mean - token_weighted) > 1e-3
    # ...and so is the same row with position ids that do not restart (attention across examples).
    leaky = {**packed, "position_ids": torch.arange(packed["input_ids"].shape[1])[None]}
    assert abs(_engine_loss(model, leaky) - token_weighted) > 1e-3


def test_only_positions_with_a_label_reach_the_lm_head(tokenizer):
    examples = _examples(tokenizer)
    batch = padding_free_collator()(examples)
    keep = batch["logits_to_keep"]
    n_labels = sum(int((torch.tensor(e["labels"][1:]) != IGNORE_INDEX).sum()) for e in examples)
    assert keep.dtype == torch.bool and int(keep.sum()) == n_labels
    assert int(keep.sum()) < 0.5 * keep.numel()  # assistant tokens are the minority of a chat row
    assert torch.equal(keep, next_token_mask(batch["labels"]))


def _causal_only(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """An attention backend that ignores the per-example mask (as some remote-code models do)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, query, key, value, None, scaling=scaling, dropout=dropout,
                                  is_causal=True, **kwargs)


def test_backend_that_attends_across_examples_falls_back_to_grouped_padding(model_on, tokenizer, caplog):
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    AttentionInterface.register("causal_only_test", _causal_only)
    ALL_MASK_ATTENTION_FUNCTIONS.register("causal_only_test", lambda *args, **kwargs: None)
    rows = _examples(tokenizer)
    caplog.set_level(logging.INFO, logger="finetune_pipeline")

    mode, collator = choose_batching(model_on("sdpa"), tokenizer, rows, True)
    lines = caplog.messages
    assert mode == "padding_free" and "agree" in lines[-1]

    mode, collator = choose_batching(model_on("causal_only_test"), tokenizer, rows, True)
    lines = caplog.messages
    assert mode == "grouped_padding"
    assert "NOT exact on attention 'causal_only_test'" in lines[-1] and "length-grouped dynamic padding" in lines[-1]
    assert "attention_mask" in collator(rows)  # padded rows

"""Batches without padding, and the proof that they change nothing.

Padding-free batches: the examples of a batch are laid end to end in one row
(transformers' `DataCollatorWithFlattening`), each with position ids starting
at 0. With no `attention_mask` and no cache, transformers' masking utils
(`masking_utils.find_packed_sequence_indices`) read the restarts of the
position ids and build a block-diagonal causal mask on sdpa and eager, so no
token attends across an example boundary. Nothing is padded, so no compute is
spent on padding.

That only holds if the model's attention goes through those masking utils.
`packing_is_exact` checks it on the model actually being trained: the same
examples, packed and one by one, must give the same log-probabilities. Where
they do not (another attention backend, remote code with its own masks), the
trainer falls back to length-grouped dynamic padding and says so.

Both collators also emit `logits_to_keep`, a boolean mask of the positions
whose next token has a label: the language-model head (vocabulary-sized, the
biggest matrix of a small model) then runs only on the ~20% of positions that
carry loss (assistant tokens), which `label_only_loss` scores.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from finetune_pipeline.lib.training.collate import IGNORE_INDEX, make_collator

log = logging.getLogger(__name__)
EXAMPLE_ID = "example_id"  # a dataset column: the example's index in the training set


def next_token_mask(labels):
    """(batch, seq) bool: position t is scored against labels[t + 1]."""
    import torch

    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return keep


def label_only_loss(outputs, labels, num_items_in_batch=None):
    """Token-level cross-entropy over the positions `logits_to_keep` selected.

    `outputs.logits` is (n_kept, vocab) when the batch carried a boolean
    `logits_to_keep`, else the full (batch, seq, vocab). The sum is divided by
    the number of label tokens in the whole (accumulated, all-rank) batch that
    the Trainer passes as `num_items_in_batch`, i.e. a token-weighted mean,
    the same reduction as transformers' own causal-LM loss.
    """
    import torch.nn.functional as F

    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    keep = next_token_mask(labels)
    targets = labels[:, 1:][keep[:, :-1]]
    if logits.dim() == 3:  # full logits: select the same positions here
        logits = logits[keep]
    loss = F.cross_entropy(logits.float(), targets.to(logits.device), reduction="sum")
    denominator = num_items_in_batch if num_items_in_batch is not None else targets.numel()
    if hasattr(denominator, "to"):
        denominator = denominator.to(loss.device)
    return loss / denominator


def accepts_logits_to_keep(model) -> bool:
    """Whether the causal LM's forward can skip the head for unscored positions."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(inner.forward).parameters


class _WithIds:
    """Pops the example ids before the wrapped collator and puts them back as a tensor."""

    def __init__(self, inner, keep_logits: bool):
        self.inner = inner
        self.keep_logits = keep_logits

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        ids = [f[EXAMPLE_ID] for f in features] if features and EXAMPLE_ID in features[0] else None
        batch = self.inner([{k: v for k, v in f.items() if k != EXAMPLE_ID} for f in features])
        if self.keep_logits:
            batch["logits_to_keep"] = next_token_mask(batch["labels"])
        if ids is not None:
            batch["example_ids"] = torch.tensor(ids, dtype=torch.long)
        return batch


def padding_free_collator(keep_logits: bool = True):
    """One row per batch, position ids restarting at every example, no padding."""
    from transformers import DataCollatorWithFlattening

    # separator_id=-100: the last token of one example is never trained to
    # predict the first token of the next.
    return _WithIds(DataCollatorWithFlattening(separator_id=IGNORE_INDEX), keep_logits)


def padded_collator(tokenizer, keep_logits: bool = True):
    """The fallback: pad to the longest row of the batch (batches are length-grouped)."""
    pad = make_collator(tokenizer)

    def collate(features):
        # The seq2seq collator would pad unknown columns too; keep only the model's.
        return pad([{"input_ids": f["input_ids"], "attention_mask": [1] * len(f["input_ids"]),
                     "labels": f["labels"]} for f in features])

    return _WithIds(collate, keep_logits)


def packing_is_exact(model, examples: list[dict[str, list[int]]], atol: float = 1e-4) -> tuple[bool, float]:
    """Packed vs one-by-one log-probabilities of the labels, on this model and backend.

    Returns (exact, max absolute difference). Runs in eval mode (no dropout)
    without gradients; a few short examples are enough to catch a backend
    that lets tokens attend across example boundaries.
    """
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            single = [_label_logprobs(model, {"input_ids": torch.tensor([e["input_ids"]]),
                                              "labels": torch.tensor([e["labels"]])}) for e in examples]
            packed = padding_free_collator(keep_logits=False)(examples)
            together = _label_logprobs(model, {k: packed[k] for k in ("input_ids", "position_ids", "labels")})
    finally:
        model.train(was_training)
    alone = torch.cat(single)
    if alone.shape != together.shape:
        return False, float("inf")
    diff = float((alone - together).abs().max())
    return diff <= atol, diff


def _label_logprobs(model, batch):
    import torch

    labels = batch.pop("labels")
    keep = next_token_mask(labels)
    device = next(model.parameters()).device
    logits = model(**{k: v.to(device) for k, v in batch.items()}, use_cache=False).logits
    logprobs = torch.log_softmax(logits[keep.to(device)].float(), dim=-1)
    return logprobs.gather(-1, labels[:, 1:][keep[:, :-1]].to(device)[:, None])[:, 0].cpu()


def choose_batching(model, tokenizer, rows: list[dict[str, Any]], want_padding_free: bool | str):
    """("padding_free" | "grouped_padding", collator): padding-free only where checked exact on this model.

    want_padding_free "auto": padding-free on a GPU, length-grouped padding on CPU. On CPU there
    is no variable-length attention kernel: a packed row of 8 examples pays attention over the
    whole row behind a block-diagonal mask, and benchmarks/training.py measured grouped padding
    1.36x faster for SmolLM2-135M on 2 cores, with 4.6% of positions padded.
    """
    keep_logits = accepts_logits_to_keep(model)
    attention = getattr(model.config, "_attn_implementation", "?")
    if want_padding_free == "auto":
        import torch

        # The Trainer moves the model later; where it will train is where CUDA is.
        want_padding_free = torch.cuda.is_available()
        log.info(f"train.packing auto: {'padding-free batches' if want_padding_free else 'length-grouped padding'} "
               f"on {'cuda' if want_padding_free else 'cpu'}")
    if want_padding_free:
        probe = sorted(rows, key=lambda r: len(r["input_ids"]))[:3]
        exact, diff = packing_is_exact(model, [{k: r[k] for k in ("input_ids", "labels")} for r in probe])
        if exact:
            log.info(f"padding-free batches: packed and one-by-one log-probs agree (max diff {diff:.1e}) "
                   f"on attention '{attention}'")
            return "padding_free", padding_free_collator(keep_logits)
        log.warning(f"padding-free batches are NOT exact on attention '{attention}' (max diff {diff:.1e}): "
               "falling back to length-grouped dynamic padding")
    return "grouped_padding", padded_collator(tokenizer, keep_logits)

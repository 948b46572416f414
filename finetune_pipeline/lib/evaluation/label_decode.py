"""Constrained greedy decoding of a label that stops as soon as the label is decided.

It chooses what constrained greedy generation chooses (`generate` with the
label trie as `prefix_allowed_tokens_fn`: at every step the highest-scoring
token among those that continue some label), but `generate` spends one forward
step per token for every row until the longest answer of the batch ends. Most
of those steps choose nothing. This loop (our own, because `generate` has no
notion of a step that is not a choice) skips them:

- A token the trie forces (the only one allowed: `{"category": "` before any
  label, `ival` after `card_arr` when no other label continues it) is not
  decided by the model: it is fed in the same forward as the token before it,
  without a step of its own.
- A row stops as soon as one label is left below its prefix: the rest of that
  label, `"}` and the end of turn are forced, so they are never computed.
- The tokens every prompt starts with (the chat template and the system
  prompt) are run once; their KV cache is copied into every batch.
- Only the last position's logits are computed (`logits_to_keep=1`).

Rows in one forward take different numbers of tokens: each row's tokens are
right-aligned, the gap on the left is masked out, and positions are given
explicitly, so every row's tokens sit where they would in an unpadded prompt.
On BANKING77 this is a few forward steps per batch instead of ~20
(docs/evaluation.md#eval-speed).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class _Node:
    children: dict[int, _Node] = field(default_factory=dict)
    outputs: list[int] = field(default_factory=list)  # the allowed outputs whose ids pass through this node


def _trie(sequences: Sequence[Sequence[int]]) -> _Node:
    root = _Node()
    for index, seq in enumerate(sequences):
        node = root
        node.outputs.append(index)
        for token in seq:
            node = node.children.setdefault(token, _Node())
            node.outputs.append(index)
    return root


def _forced(node: _Node) -> tuple[list[int], _Node]:
    """The tokens the trie forces from `node` (while one child and more than one output), and where they lead."""
    tokens = []
    while len(node.outputs) > 1 and len(node.children) == 1:
        token, node = next(iter(node.children.items()))
        tokens.append(token)
    return tokens, node


def _common_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """How many leading ids every prompt shares, leaving each at least one id of its own."""
    n = min(len(p) for p in prompts) - 1
    first = prompts[0]
    for p in prompts[1:]:
        n = min(n, next((j for j in range(n) if p[j] != first[j]), n))
    return max(n, 0)


def _cache_argument(model) -> str:
    # transformers renamed forward's `past_key_values` to `cache` (5.2x warns of the old name); both are accepted.
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _cache_of(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def decode_labels(model, prompts: Sequence[Sequence[int]], sequences: Sequence[Sequence[int]], batch_size: int,
                  pad_id: int) -> list[int]:
    """For each prompt (token ids, generation prompt included), the index of the output in `sequences` (each an
    allowed output's token ids, end-of-sequence included) that constrained greedy decoding picks."""
    import torch

    root = _trie(sequences)
    if not prompts:
        return []
    start_tokens, start = _forced(root)
    chosen = [-1] * len(prompts)
    if len(start.outputs) == 1:  # one allowed output: nothing to decide
        return [start.outputs[0]] * len(prompts)
    # A prefix pass of its own pays off across rows; a single request would only run two forwards instead of one.
    shared = _common_prefix(prompts) if len(prompts) > 1 else 0
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths share a batch
    device = model.device
    cache_arg = _cache_argument(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            prefix_cache = None
            if shared:
                ids = torch.tensor([list(prompts[0][:shared])], device=device)
                prefix_cache = _cache_of(model(input_ids=ids, use_cache=True, logits_to_keep=1))
            for begin in range(0, len(order), batch_size):
                batch = order[begin:begin + batch_size]
                feeds = [list(prompts[i][shared:]) + start_tokens for i in batch]
                nodes = [start] * len(batch)
                cache = None
                if prefix_cache is not None:
                    cache = copy.deepcopy(prefix_cache)
                    cache.batch_repeat_interleave(len(batch))
                mask = torch.ones((len(batch), shared), dtype=torch.long, device=device)
                positions = [shared] * len(batch)
                while batch:
                    width = max(len(f) for f in feeds)
                    ids = torch.full((len(batch), width), pad_id, dtype=torch.long, device=device)
                    step_mask = torch.zeros((len(batch), width), dtype=torch.long, device=device)
                    pos = torch.zeros((len(batch), width), dtype=torch.long, device=device)
                    for r, feed in enumerate(feeds):
                        gap = width - len(feed)
                        ids[r, gap:] = torch.tensor(feed, device=device)
                        step_mask[r, gap:] = 1
                        # The masked gap's positions only need to be valid; its keys are never attended to.
                        pos[r, :] = positions[r]
                        pos[r, gap:] = torch.arange(positions[r], positions[r] + len(feed), device=device)
                        positions[r] += len(feed)
                    mask = torch.cat([mask, step_mask], dim=1)
                    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                                logits_to_keep=1, **{cache_arg: cache})
                    cache, logits = _cache_of(out), out.logits[:, -1, :]
                    keep = []
                    for r, node in enumerate(nodes):
                        allowed = sorted(node.children)
                        # argmax over the allowed ids; a tie goes to the lowest id, as generate's argmax does.
                        best = allowed[int(torch.argmax(logits[r, allowed]))]
                        node = node.children[best]
                        forced, node = _forced(node)
                        if len(node.outputs) == 1:
                            chosen[batch[r]] = node.outputs[0]
                            continue
                        nodes[r], feeds[r] = node, [best, *forced]
                        keep.append(r)
                    if len(keep) < len(batch) and keep:
                        # Finished rows leave the batch, and their cache rows with them.
                        cache.batch_select_indices(torch.tensor(keep, device=device))
                        mask = mask[keep]
                    batch = [batch[r] for r in keep]
                    nodes = [nodes[r] for r in keep]
                    feeds = [feeds[r] for r in keep]
                    positions = [positions[r] for r in keep]
    finally:
        model.train(was_training)
    return chosen

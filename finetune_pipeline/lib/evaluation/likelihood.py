"""Likelihood scoring of a label set: every label's log-probability after each prompt, ranked.

A label's score is the summed log-probability of its answer tokens (exactly the
ids training puts under the loss: constrained.output_token_ids, end-of-turn
included) after the prompt. Unlike constrained greedy decoding (constrained.py),
this is a full argmax over the label set, and it ranks every label (top-k).

How the work is shared. The labels' token ids form a prefix trie (BANKING77's
77 JSON answers are 943 tokens, but 540 trie nodes: `{"category": "` and
prefixes such as `card_` are shared). Each row is ONE forward pass over
[prompt tokens, then every non-leaf trie node] with a tree-shaped 4D attention
mask and explicit position_ids: a node attends to the whole prompt and to its
own ancestors only, and sits at position len(prompt) + depth - 1, so its
logits are exactly those of the naive prompt+label forward. The prompt is
computed once, each shared prefix once. Why one pass rather than a KV cache of
the prompt followed by the trie: the result is the same, but without cache
objects to expand or slice per row (their API differs across transformers
versions), and the prompt and the trie fill one larger matrix multiply.
Llama-family models in transformers accept such a mask as-is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from finetune_pipeline.lib.evaluation.constrained import eos_token_id, output_token_ids
from finetune_pipeline.lib.evaluation.generate import _prompt_messages

# Positions per forward pass (rows x (prompt + trie)): bounds the logits held at once
# (positions x vocabulary x 4 bytes: 2048 x 49152 x 4 = 400 MB for SmolLM2).
TOKENS_PER_PASS = 2048


@dataclass(frozen=True)
class LabelTrie:
    """The non-leaf nodes of the labels' token trie, and where each label's tokens are scored.

    `tokens[i]`, `depth[i]` (1-based) and `ancestors[i]` (node indices, itself included) describe node i;
    node i is the prefix whose last token is tokens[i]. `score_pos`/`score_tok`/`score_label` flatten every
    label's tokens: label score_label[k] gets the log-prob of token score_tok[k] at trie position score_pos[k]
    (0 = the prompt's last token, 1 + i = node i).
    """

    tokens: list[int]
    depth: list[int]
    ancestors: list[list[int]]
    score_pos: list[int]
    score_tok: list[int]
    score_label: list[int]
    labels: int

    @classmethod
    def build(cls, sequences: Sequence[Sequence[int]]) -> LabelTrie:
        index: dict[tuple[int, ...], int] = {}
        tokens, depth, ancestors = [], [], []
        pos, tok, lab = [], [], []
        for label, seq in enumerate(sequences):
            for k, token in enumerate(seq):
                prefix = tuple(seq[:k])
                pos.append(0 if not prefix else 1 + index[prefix])
                tok.append(token)
                lab.append(label)
                if k < len(seq) - 1 and prefix + (token,) not in index:  # the last token (eos) is a leaf
                    node = len(tokens)
                    index[prefix + (token,)] = node
                    tokens.append(token)
                    depth.append(k + 1)
                    ancestors.append([*(ancestors[index[prefix]] if prefix else []), node])
        if len(set(map(tuple, sequences))) != len(sequences):
            raise ValueError("two labels tokenize to the same answer; their likelihoods could not be told apart")
        return cls(tokens, depth, ancestors, pos, tok, lab, len(sequences))


def label_log_probs(model, tokenizer, conversations: Sequence[Sequence[dict]], outputs: Sequence[str],
                    tokens_per_pass: int = TOKENS_PER_PASS) -> np.ndarray:
    """log P(output | prompt) for every conversation (rows) and allowed output (columns), float64."""
    import torch

    eos = eos_token_id(model, tokenizer)
    trie = LabelTrie.build([output_token_ids(tokenizer, o, eos) for o in outputs])
    prompts = [tokenizer(tokenizer.apply_chat_template(_prompt_messages(c), add_generation_prompt=True,
                                                       tokenize=False), add_special_tokens=False)["input_ids"]
               for c in conversations]
    n = len(trie.tokens)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths together: less padding
    scores = np.zeros((len(prompts), trie.labels))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    device = model.device
    # The trie part of the mask, shared by every row: node i sees its ancestors (itself included).
    tree = torch.zeros(n, n, dtype=torch.bool)
    for i, anc in enumerate(trie.ancestors):
        tree[i, anc] = True
    node_tokens = torch.tensor(trie.tokens)
    node_depth = torch.tensor(trie.depth)
    pos_idx = torch.tensor(trie.score_pos, device=device)
    tok_idx = torch.tensor(trie.score_tok, device=device)
    lab_idx = torch.tensor(trie.score_label, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            start = 0
            while start < len(order):
                rows = [order[start]]
                # Rows sorted by length: the last one added is the longest, which sets the padded length.
                while (start + len(rows) < len(order) and
                       (len(rows) + 1) * (len(prompts[order[start + len(rows)]]) + n) <= tokens_per_pass):
                    rows.append(order[start + len(rows)])
                start += len(rows)
                ids, mask, positions = _pass_inputs([prompts[r] for r in rows], tree, node_tokens, node_depth, pad,
                                                    model.dtype)
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                               position_ids=positions.to(device), logits_to_keep=n + 1).logits
                logp = torch.log_softmax(logits.float(), dim=-1)  # (rows, 1 + n, vocab)
                per_token = logp[:, pos_idx, tok_idx]  # (rows, label tokens)
                totals = torch.zeros(len(rows), trie.labels, dtype=torch.float64, device=device)
                totals.index_add_(1, lab_idx, per_token.double())
                scores[rows] = totals.cpu().numpy()
    finally:
        model.train(was_training)
    return scores


def _pass_inputs(prompts: list[list[int]], tree, node_tokens, node_depth, pad: int, dtype):
    """input_ids, the additive 4D mask and position_ids of one pass: left-padded prompts, then the trie."""
    import torch

    n, width = len(node_tokens), max(len(p) for p in prompts)
    length = width + n
    ids = torch.full((len(prompts), length), pad, dtype=torch.long)
    allowed = torch.zeros(len(prompts), length, length, dtype=torch.bool)
    positions = torch.zeros(len(prompts), length, dtype=torch.long)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    for b, p in enumerate(prompts):
        first = width - len(p)  # left padding keeps every prompt's last token at the same index
        ids[b, first:width] = torch.tensor(p)
        ids[b, width:] = node_tokens
        positions[b, first:width] = torch.arange(len(p))
        positions[b, width:] = len(p) + node_depth - 1
        allowed[b, first:width, first:width] = causal[: len(p), : len(p)]
        allowed[b, width:, first:width] = True  # every node sees the whole prompt
        allowed[b, width:, width:] = tree
        # Pads attend to themselves only: no query row is fully masked (no NaN), and nothing attends to them.
        allowed[b, range(first), range(first)] = True
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
    return ids, mask[:, None], positions


def ranked_labels(scores: np.ndarray, labels: Sequence[str], k: int = 3) -> list[list[str]]:
    """Each row's k most likely labels, best first (ties: the label set's order)."""
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [[labels[j] for j in row] for row in top]

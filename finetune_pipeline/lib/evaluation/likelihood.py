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

The ranking the eval reports needs only each row's top k, and most of the trie
is the tails of single labels (BANKING77: 51 nodes are shared by two labels or
more, 412 belong to one label each). `top_labels` scores exactly what the top k
needs, best first: one pass over the prompt and the shared nodes gives every
label an upper bound (its log-probability so far; log-probabilities are <= 0,
so the rest of a label can only lower it), then passes over the tails of the
labels whose bounds lead, until the k best bounds all belong to fully scored
labels. Those k are then the exact top k of the full scores (`label_log_probs`,
kept as the reference and tested equal), at about a third of the positions.
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
# Rounds of leading labels' tails before a row falls back to the whole trie (docs/evaluation.md: likelihood).
PRUNED_ROUNDS = 1


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

    def label_paths(self) -> list[list[int]]:
        """Each label's non-leaf nodes (the positions its tokens are scored at, besides the prompt's last)."""
        paths: list[set[int]] = [set() for _ in range(self.labels)]
        for position, label in zip(self.score_pos, self.score_label):
            if position:
                paths[label].update(self.ancestors[position - 1])
        return [sorted(p) for p in paths]


def top_labels(model, tokenizer, conversations: Sequence[Sequence[dict]], outputs: Sequence[str], k: int,
               tokens_per_pass: int = TOKENS_PER_PASS) -> list[list[int]]:
    """Each conversation's k highest-scoring outputs (indices into `outputs`), best first, ties in `outputs` order:
    the same ranking as `ranked_labels(label_log_probs(...))`, scoring only what decides it."""
    import torch

    eos = eos_token_id(model, tokenizer)
    trie = LabelTrie.build([output_token_ids(tokenizer, o, eos) for o in outputs])
    prompts = _prompt_ids(tokenizer, conversations)
    k = min(k, trie.labels)
    score_pos = np.asarray(trie.score_pos)
    score_label = np.asarray(trie.score_label)
    score_tok = torch.tensor(trie.score_tok)
    at_position = {int(q): np.flatnonzero(score_pos == q) for q in np.unique(score_pos)}
    paths = trie.label_paths()
    shared = sorted({node for path in paths for node in path if sum(node in p for p in paths) > 1})
    # Per row, the log-prob of every label token scored so far (NaN: its position not run yet).
    known = np.full((len(prompts), len(score_pos)), np.nan)
    pending = {r: shared for r in range(len(prompts))}  # what each unfinished row runs next
    pending_rounds = [PRUNED_ROUNDS] * len(prompts)
    every_node = list(range(len(trie.tokens)))
    ranking: list[list[int]] = [[] for _ in prompts]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            while pending:
                rows = sorted(pending, key=lambda r: (len(prompts[r]), r))
                for batch in _batches(rows, lambda r: len(prompts[r]) + len(pending[r]), tokens_per_pass):
                    logp = _run_nodes(model, tokenizer, [prompts[r] for r in batch], [pending[r] for r in batch],
                                      trie, eos)
                    for b, r in enumerate(batch):
                        # Positions run: the prompt's last token (0) and each node (1 + node).
                        for column, position in enumerate([0, *(1 + n for n in pending[r])]):
                            entries = at_position[position]
                            known[r, entries] = logp[b, column, score_tok[entries]].double().cpu().numpy()
                pending = {}
                for r in rows:
                    bound = np.zeros(trie.labels)
                    np.add.at(bound, score_label, np.nan_to_num(known[r], nan=0.0))
                    complete = np.ones(trie.labels, dtype=bool)
                    complete[score_label[np.isnan(known[r])]] = False
                    order = np.argsort(-bound, kind="stable")
                    if complete[order[:k]].all():
                        ranking[r] = [int(j) for j in order[:k]]
                        continue
                    # Run the tails of the unfinished labels among the leading 2k: for a confident model this
                    # round ends it. An unsure one keeps reordering its leaders, round after round; it runs the
                    # whole trie next, so a row costs at most about a third more than scoring every label.
                    if pending_rounds[r]:
                        pending_rounds[r] -= 1
                        lead = [j for j in order[: 2 * k] if not complete[j]]
                        pending[r] = sorted({node for j in lead for node in paths[j]})
                    else:
                        pending[r] = every_node
    finally:
        model.train(was_training)
    return ranking


def label_log_probs(model, tokenizer, conversations: Sequence[Sequence[dict]], outputs: Sequence[str],
                    tokens_per_pass: int = TOKENS_PER_PASS) -> np.ndarray:
    """log P(output | prompt) for every conversation (rows) and allowed output (columns), float64: every label's
    full score (the eval ranks with `top_labels`, which computes only what the top k needs)."""
    import torch

    eos = eos_token_id(model, tokenizer)
    trie = LabelTrie.build([output_token_ids(tokenizer, o, eos) for o in outputs])
    prompts = _prompt_ids(tokenizer, conversations)
    every_node = list(range(len(trie.tokens)))
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths together: less padding
    scores = np.zeros((len(prompts), trie.labels))
    pos_idx, tok_idx = torch.tensor(trie.score_pos), torch.tensor(trie.score_tok)
    lab_idx = torch.tensor(trie.score_label)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for rows in _batches(order, lambda r: len(prompts[r]) + len(every_node), tokens_per_pass):
                logp = _run_nodes(model, tokenizer, [prompts[r] for r in rows], [every_node] * len(rows), trie, eos)
                per_token = logp[:, pos_idx.to(logp.device), tok_idx.to(logp.device)].double().cpu()
                totals = torch.zeros(len(rows), trie.labels, dtype=torch.float64)
                totals.index_add_(1, lab_idx, per_token)
                scores[rows] = totals.numpy()
    finally:
        model.train(was_training)
    return scores


def _prompt_ids(tokenizer, conversations) -> list[list[int]]:
    return [tokenizer(tokenizer.apply_chat_template(_prompt_messages(c), add_generation_prompt=True, tokenize=False),
                      add_special_tokens=False)["input_ids"] for c in conversations]


def _batches(rows: list[int], length, tokens_per_pass: int):
    """Consecutive runs of `rows` whose padded size (rows x the longest length) stays within tokens_per_pass."""
    batch: list[int] = []
    for r in rows:
        if batch and (len(batch) + 1) * max(length(x) for x in [*batch, r]) > tokens_per_pass:
            yield batch
            batch = []
        batch.append(r)
    if batch:
        yield batch


def _run_nodes(model, tokenizer, prompts: list[list[int]], nodes: list[list[int]], trie: LabelTrie, eos: int):
    """One forward of each prompt followed by its own trie nodes (each with all its ancestors among them, in trie
    order): per row, the log-softmax at the prompt's last token and at each node, in that order, as one float32
    tensor (rows, 1 + the longest node list, vocabulary), as in the reference."""
    import torch

    width, block = max(len(p) for p in prompts), max(len(n) for n in nodes)
    length = width + block
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    ids = torch.full((len(prompts), length), pad, dtype=torch.long)
    allowed = torch.zeros(len(prompts), length, length, dtype=torch.bool)
    positions = torch.zeros(len(prompts), length, dtype=torch.long)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    for b, (p, own) in enumerate(zip(prompts, nodes)):
        first = width - len(p)  # left padding keeps every prompt's last token at the same index
        ids[b, first:width] = torch.tensor(p)
        positions[b, first:width] = torch.arange(len(p))
        allowed[b, first:width, first:width] = causal[: len(p), : len(p)]
        column = {node: width + j for j, node in enumerate(own)}
        for j, node in enumerate(own):
            ids[b, width + j] = trie.tokens[node]
            positions[b, width + j] = len(p) + trie.depth[node] - 1
            allowed[b, width + j, first:width] = True  # a node sees the whole prompt and its own ancestors
            allowed[b, width + j, [column[a] for a in trie.ancestors[node]]] = True
        # Pads attend to themselves only: no query row is fully masked (no NaN), and nothing attends to them.
        for j in [*range(first), *range(width + len(own), length)]:
            allowed[b, j, j] = True
    mask = torch.zeros(allowed.shape, dtype=model.dtype).masked_fill_(~allowed, torch.finfo(model.dtype).min)
    device = model.device
    logits = model(input_ids=ids.to(device), attention_mask=mask[:, None].to(device),
                   position_ids=positions.to(device), logits_to_keep=block + 1).logits
    return torch.log_softmax(logits.float(), dim=-1)


def ranked_labels(scores: np.ndarray, labels: Sequence[str], k: int = 3) -> list[list[str]]:
    """Each row's k most likely labels, best first (ties: the label set's order)."""
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [[labels[j] for j in row] for row in top]

"""Likelihood scoring of a label set: the one-pass trie scorer against a naive forward per label, and its wiring."""

import json

import numpy as np
import pytest
import torch

from finetune_pipeline.lib import PROJECT_ROOT
from finetune_pipeline.lib.evaluation.classification import allowed_outputs
from finetune_pipeline.lib.evaluation.constrained import eos_token_id, output_token_ids
from finetune_pipeline.lib.evaluation.likelihood import LabelTrie, label_log_probs, ranked_labels

BANKING77_LABELS = PROJECT_ROOT / "data" / "banking77" / "categories.json"
TEXTS = ("My card has not arrived yet", "What is the exchange rate for euros today?", "I want a refund",
         "hi", "Why was I charged a fee when I took cash out of an ATM abroad last week?")


def naive_log_probs(model, tokenizer, conversations, outputs):
    """The reference: one full forward of prompt + answer per (row, label), no padding, no sharing."""
    eos = eos_token_id(model, tokenizer)
    out = np.zeros((len(conversations), len(outputs)))
    with torch.inference_mode():
        for r, c in enumerate(conversations):
            prompt = tokenizer(tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False),
                               add_special_tokens=False)["input_ids"]
            for j, o in enumerate(outputs):
                answer = output_token_ids(tokenizer, o, eos)
                logp = torch.log_softmax(model(torch.tensor([prompt + answer])).logits[0].double(), -1)
                out[r, j] = sum(logp[len(prompt) - 1 + k, t].item() for k, t in enumerate(answer))
    return out


def conversations():
    return [[{"role": "system", "content": "Classify the banking query."}, {"role": "user", "content": t}]
            for t in TEXTS]


@pytest.mark.parametrize("tokens_per_pass", [1, 2048])  # one row a pass, and several (padded) rows a pass
def test_trie_scores_equal_a_naive_forward_per_label(tiny_lm, tokens_per_pass):
    model, tokenizer = tiny_lm
    labels = json.loads(BANKING77_LABELS.read_text())[:12]
    outputs = allowed_outputs("category", labels)
    fast = label_log_probs(model, tokenizer, conversations(), outputs, tokens_per_pass=tokens_per_pass)
    slow = naive_log_probs(model, tokenizer, conversations(), outputs)
    assert fast.shape == (len(TEXTS), len(labels))
    np.testing.assert_allclose(fast, slow, atol=1e-4, rtol=0)
    assert ranked_labels(fast, labels, k=len(labels)) == ranked_labels(slow, labels, k=len(labels))
    # A random model still prefers some labels: the scores are not all one value.
    assert np.ptp(fast, axis=1).min() > 0.01


def test_trie_shares_prefixes_and_scores_every_answer_token(tokenizer, tiny_lm):
    model, _ = tiny_lm
    eos = eos_token_id(model, tokenizer)
    labels = json.loads(BANKING77_LABELS.read_text())
    seqs = [output_token_ids(tokenizer, o, eos) for o in allowed_outputs("category", labels)]
    trie = LabelTrie.build(seqs)
    assert len(trie.score_tok) == sum(map(len, seqs))  # every answer token is scored once per label
    distinct_prefixes = {tuple(s[:k]) for s in seqs for k in range(1, len(s))}
    assert len(trie.tokens) == len(distinct_prefixes) < sum(len(s) - 1 for s in seqs)
    for i, anc in enumerate(trie.ancestors):  # a node's ancestors are its prefix, one node per depth
        assert [trie.depth[a] for a in anc] == list(range(1, trie.depth[i] + 1))


def test_ranked_labels_best_first_ties_in_label_order():
    scores = np.array([[-1.0, -0.5, -3.0, -0.5]])
    assert ranked_labels(scores, ["a", "b", "c", "d"]) == [["b", "d", "a"]]


def test_two_labels_with_the_same_tokens_are_refused():
    with pytest.raises(ValueError, match="same answer"):
        LabelTrie.build([[1, 2, 0], [1, 2, 0]])

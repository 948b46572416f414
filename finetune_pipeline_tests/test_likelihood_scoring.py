"""Likelihood scoring of a label set: the one-pass trie scorer against a naive forward per label, and its wiring."""

import json

import numpy as np
import pytest
import torch

from finetune_pipeline.lib import PROJECT_ROOT
from finetune_pipeline.lib.evaluation.classification import allowed_outputs
from finetune_pipeline.lib.evaluation.constrained import eos_token_id, output_token_ids
from finetune_pipeline.lib.evaluation.generate import strip_assistant
from finetune_pipeline.lib.evaluation.likelihood import LabelTrie, label_log_probs, ranked_labels, top_labels
from finetune_pipeline.lib.models.base_models import load_model, load_tokenizer, resolve_base_model
from finetune_pipeline_tests.helpers import MODEL_CACHE

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


@pytest.mark.parametrize(("k", "tokens_per_pass"), [(1, 1), (3, 2048), (12, 2048)])
def test_top_labels_are_the_full_scores_top_k(tiny_lm, k, tokens_per_pass):
    # A random model spreads its probability: the bounds are loose, so this walks many rounds of tails.
    model, tokenizer = tiny_lm
    labels = json.loads(BANKING77_LABELS.read_text())[:12]
    outputs = allowed_outputs("category", labels)
    full = label_log_probs(model, tokenizer, conversations(), outputs)
    top = top_labels(model, tokenizer, conversations(), outputs, k, tokens_per_pass=tokens_per_pass)
    assert [[labels[j] for j in row] for row in top] == ranked_labels(full, labels, k=k)


@pytest.fixture(scope="module")
def smollm2():
    path = resolve_base_model("embedded:smollm2-135m-instruct", MODEL_CACHE).path
    return load_model(path), load_tokenizer(path)


def test_top_labels_on_a_pretrained_model_equal_scoring_the_whole_trie(smollm2):
    # The real model and the 77 BANKING77 labels: the shape the eval runs (prompt + 51 shared nodes, then the
    # tails of the leading labels, then the whole trie for rows still undecided), the same top 3 as scoring all
    # 463 nodes. The base model is unsure (its leaders keep changing), the case where pruning cannot pay: it
    # still costs at most about a third more. (On the fine-tuned BANKING77 model it runs 0.41x the positions:
    # docs/evaluation.md.)
    model, tokenizer = smollm2
    labels = json.loads(BANKING77_LABELS.read_text())
    outputs = allowed_outputs("category", labels)
    rows = conversations()[:3]
    positions = []
    handle = model.model.embed_tokens.register_forward_hook(lambda m, args, out: positions.append(out.shape[0] * out.shape[1]))
    try:
        top = top_labels(model, tokenizer, rows, outputs, 3, tokens_per_pass=1)  # one row a pass: no padding
        pruned, positions[:] = sum(positions), []
        full = label_log_probs(model, tokenizer, rows, outputs, tokens_per_pass=1)
    finally:
        handle.remove()
    assert [[labels[j] for j in row] for row in top] == ranked_labels(full, labels, k=3)
    assert len({row[0] for row in top}) >= 2  # several answers, not one label repeated
    assert pruned < 1.5 * sum(positions), (pruned, sum(positions))  # an unsure model: at most a third more


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


def _category_rows(tmp_path):
    from finetune_pipeline_tests.helpers import write_jsonl

    labels = ["card_arrival", "refund_not_showing_up", "exchange_rate"]
    texts = ["my card is late", "where is my refund", "what rate do you use", "card still not here",
             "refund missing from account", "exchange rate for euros", "has my card been sent"]
    write_jsonl(tmp_path / "raw" / "rows.jsonl", [{"text": f"{t} (ticket {i})", "category": labels[i % 3]}
                                                  for i in range(8) for t in texts])
    # Two labels no row has: top-3 of five labels can miss.
    (tmp_path / "labels.json").write_text(json.dumps([*labels, "lost_or_stolen_card", "top_up_failed"]))
    return tmp_path / "raw"


def test_model_eval_reports_likelihood_metrics_that_match_a_naive_ranking(tmp_path, tiny_lm):
    from finetune_pipeline.lib import stages
    from finetune_pipeline.lib.config import load_config
    from finetune_pipeline.lib.evaluation.report import EvalReport
    from finetune_pipeline.lib.evaluation.resampling import load_answers
    from finetune_pipeline_tests.helpers import write_config

    raw = _category_rows(tmp_path)
    cfg = load_config(write_config(
        tmp_path, raw, data={"mapping": {"format": "table", "labels": ["category"]}, "min_train_rows": 5},
        eval={"classification": {"field": "category", "labels_file": "labels.json", "scoring": "likelihood"},
              "limit": 8, "max_new_tokens": 4, "batch_size": 8, "latency_requests": 0, "resamples": 200}))
    base = stages.base_model(cfg)
    dataset = stages.training_dataset(cfg, stages.raw_examples(cfg), base)
    ref = stages.model_eval(cfg, base.info["version_key"], stages.eval_set(cfg, dataset))
    metrics, labels = ref.info["metrics"], json.loads((tmp_path / "labels.json").read_text())
    assert "constrained/accuracy" not in metrics  # only the pass asked for runs
    report = EvalReport.load(ref.dir, with_predictions=True)
    n = metrics["n"]
    assert len(report.ranked) == n >= 3
    # The ranking model_eval wrote is the naive reference's, row by row.
    model, tokenizer = tiny_lm  # the base version's weights (write_config's tiny-random)
    with open(ref.info["test_file"]) as f:
        conversations = [strip_assistant(json.loads(line)["messages"]) for line in f][:n]
    slow = naive_log_probs(model, tokenizer, conversations, allowed_outputs("category", labels))
    assert [r.top for r in report.ranked] == ranked_labels(slow, labels)
    gold = [json.loads(r.expected)["category"] for r in report.ranked]
    assert metrics["likelihood/accuracy"] == pytest.approx(np.mean([g == r.top[0] for g, r in zip(gold, report.ranked)]))
    assert metrics["likelihood/top3_accuracy"] == pytest.approx(np.mean([g in r.top for g, r in zip(gold, report.ranked)]))
    assert {"likelihood/accuracy", "likelihood/macro_f1", "likelihood/top3_accuracy"} <= report.intervals.keys()
    assert report.classification.likelihood_seconds is not None
    assert (ref.dir / "confusion_category_likelihood.png").is_file()
    # Promotion compares versions from the saved answers: the ranking comes back with them.
    answers = load_answers(ref.dir)
    assert [list(t) for t in answers.classification.ranked] == [r.top for r in report.ranked]


def test_a_backend_without_likelihood_scoring_gets_a_note_not_an_error():
    from finetune_pipeline.lib.evaluation.evaluate import ClassificationSettings, EvalSettings, EvalSubject, evaluate

    class Echo:  # answers every row with the first label, and has no rank_labels
        name = "openai"

        def identity(self):
            return {"backend": self.name}

        def generate(self, conversations, max_new_tokens):
            return ['{"category": "a"}'] * len(conversations)

    records = [{"messages": [{"role": "user", "content": t}, {"role": "assistant", "content": '{"category": "a"}'}]}
               for t in ("x", "y")]
    settings = EvalSettings(max_new_tokens=4, resamples=100,
                            classification=ClassificationSettings(field="category", labels=["a", "b"], likelihood=True))
    report = evaluate(Echo(), records, settings, EvalSubject(version="v", kind="api", eval_set="e", test_file="t"))
    assert report.metrics["classification/accuracy"] == 1.0 and "likelihood/accuracy" not in report.metrics
    assert report.classification.notes == ["likelihood scoring needs eval.backend transformers; openai has none, so "
                                           "no likelihood/... metrics are reported"]


@pytest.mark.parametrize(("classification", "passes_or_error"), [
    ({"field": "category", "scoring": "likelihood"}, ["likelihood"]),
    ({"field": "category", "constrained": True}, ["constrained"]),  # the older spelling, as before
    ({"field": "category", "constrained": True, "scoring": ["likelihood"]}, ["constrained", "likelihood"]),
    ({"field": "category", "scoring": ["greedy"]}, []),
    ({"scoring": "likelihood"}, "`scoring: likelihood` needs eval.classification.field"),
    ({"field": "category", "constrained": False, "scoring": "constrained"},
     "`constrained: false` contradicts `scoring: constrained`"),
])
def test_scoring_and_its_older_spelling(tmp_path, classification, passes_or_error):
    from finetune_pipeline.lib.config import ConfigError, load_config
    from finetune_pipeline_tests.helpers import SAMPLE_RAW, write_config

    path = write_config(tmp_path, SAMPLE_RAW, eval={"classification": classification})
    if isinstance(passes_or_error, list):
        assert load_config(path).eval.classification.passes() == passes_or_error
    else:
        with pytest.raises(ConfigError) as error:
            load_config(path)
        assert passes_or_error in str(error.value) and "\n" not in str(error.value) and "config.yaml" in str(error.value)

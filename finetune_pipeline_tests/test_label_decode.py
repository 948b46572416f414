"""Label decoding that stops once the label is decided: the same labels as constrained `generate`, in fewer steps."""

import json

import pytest

from finetune_pipeline.lib import PROJECT_ROOT, stages
from finetune_pipeline.lib.config import load_config
from finetune_pipeline.lib.evaluation.classification import allowed_outputs
from finetune_pipeline.lib.evaluation.constrained import (
    OutputTrie,
    eos_token_id,
    generate_constrained,
    output_token_ids,
)
from finetune_pipeline.lib.evaluation.generate import generate_batched
from finetune_pipeline.lib.evaluation.label_decode import _common_prefix, decode_labels
from finetune_pipeline.lib.models.base_models import load_model, load_tokenizer, resolve_base_model
from finetune_pipeline_tests.helpers import MODEL_CACHE, write_config, write_jsonl

BANKING77_LABELS = PROJECT_ROOT / "data" / "banking77" / "categories.json"
SYSTEM = {"role": "system", "content": "Classify the banking query into one of 77 intents. Reply in JSON."}
TEXTS = ("My card has not arrived yet", "What is the exchange rate for euros today?", "I want a refund",
         "hi", "Why was I charged a fee when I took cash out of an ATM abroad last week?",
         "my top up failed", "How do I change my PIN?", "someone stole my phone and card",
         "Can I get a virtual card?", "the transfer to my friend is still pending", "Is there a fee for this?")


def reference(model, tokenizer, conversations, allowed, batch_size):
    """Constrained greedy decoding by transformers' own `generate` with the label trie as prefix_allowed_tokens_fn."""
    eos = eos_token_id(model, tokenizer)
    trie = OutputTrie([output_token_ids(tokenizer, o, eos) for o in allowed], eos)
    return generate_batched(model, tokenizer, conversations, max_new_tokens=trie.max_len, batch_size=batch_size,
                            allowed_tokens=trie.allowed, eos_token_id=eos)


@pytest.fixture(scope="module")
def smollm2():
    path = resolve_base_model("embedded:smollm2-135m-instruct", MODEL_CACHE).path
    return load_model(path), load_tokenizer(path)


# The real pretrained model, so its choices spread over many labels and branch at different depths; batch
# sizes that cut the rows into batches whose rows finish at different steps; rows with and without the
# shared system prompt (so the shared prefix is the chat template's start only).
@pytest.mark.slow  # ~40 s: transformers' generate, the reference, is the slow side
def test_the_labels_are_those_of_constrained_generate(smollm2):
    batch_size = 5  # 14 rows: batches of 5, 5 and 4
    model, tokenizer = smollm2
    allowed = allowed_outputs("category", json.loads(BANKING77_LABELS.read_text()))
    conversations = [[SYSTEM, {"role": "user", "content": t}] for t in TEXTS]
    conversations += [[{"role": "user", "content": t}] for t in TEXTS[:3]]
    fast = generate_constrained(model, tokenizer, conversations, allowed, batch_size=batch_size)
    assert fast == reference(model, tokenizer, conversations, allowed, batch_size)
    assert len(set(fast)) >= 3  # the comparison covers several labels, not one answer repeated


def test_forced_tokens_and_a_decided_label_cost_no_step(tiny_lm):
    model, tokenizer = tiny_lm
    # Two labels that differ from their first token on: after `{"category": "` (forced, fed with the prompt)
    # one choice decides the label, so a batch is the shared prefix's pass plus one step.
    allowed = allowed_outputs("category", ["card_arrival_and_delivery_questions", "zebra_crossing"])
    calls = []
    handle = model.register_forward_hook(lambda module, args, out: calls.append(1))
    try:
        answers = generate_constrained(model, tokenizer, [[SYSTEM, {"role": "user", "content": t}] for t in TEXTS[:3]],
                                       allowed, batch_size=8)
    finally:
        handle.remove()
    assert len(calls) == 2 and set(answers) <= set(allowed)
    # generate takes one step per answer token of the longest answer.
    calls.clear()
    handle = model.register_forward_hook(lambda module, args, out: calls.append(1))
    try:
        reference(model, tokenizer, [[SYSTEM, {"role": "user", "content": TEXTS[0]}]], allowed, 8)
    finally:
        handle.remove()
    assert len(calls) > 2


def test_one_allowed_output_needs_no_forward(tiny_lm):
    model, tokenizer = tiny_lm
    eos = eos_token_id(model, tokenizer)
    only = output_token_ids(tokenizer, '{"category": "x"}', eos)
    assert decode_labels(model, [[1, 2, 3], [1, 4]], [only], batch_size=4, pad_id=0) == [0, 0]


def test_the_shared_prefix_leaves_every_prompt_a_token_of_its_own():
    assert _common_prefix([[1, 2, 3, 4], [1, 2, 3, 9], [1, 2, 5]]) == 2
    assert _common_prefix([[1, 2, 3], [1, 2, 3]]) == 2  # identical prompts: the last token is still fed per row
    assert _common_prefix([[7, 2], [1, 2]]) == 0


def test_answers_constrained_skips_free_generation_and_answers_with_labels(tmp_path, monkeypatch):
    from finetune_pipeline.lib.evaluation.transformers_backend import TransformersBackend

    labels = ["card_arrival", "refund_not_showing_up", "exchange_rate"]
    texts = ["my card is late", "where is my refund", "what rate do you use", "card still not here",
             "refund missing from account", "exchange rate for euros"]
    raw = tmp_path / "raw"
    write_jsonl(raw / "rows.jsonl", [{"text": f"{t} (ticket {i})", "category": labels[i % 3]}
                                     for i in range(8) for t in texts])
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    classification = {"field": "category", "labels_file": "labels.json", "scoring": ["constrained"]}

    def config(answers):
        return load_config(write_config(
            tmp_path, raw, data={"mapping": {"format": "table", "labels": ["category"]}, "min_train_rows": 5},
            eval={"classification": {**classification, "answers": answers}, "limit": 6, "max_new_tokens": 8,
                  "batch_size": 4, "latency_requests": 2}))

    free_cfg, cfg = config("free"), config("constrained")
    base = stages.base_model(cfg)
    evals = stages.eval_set(cfg, stages.training_dataset(cfg, stages.raw_examples(cfg), base))
    version = base.info["version_key"]
    assert stages.model_eval_key(cfg, version, evals) != stages.model_eval_key(free_cfg, version, evals)

    def no_free_generation(self, conversations, max_new_tokens):
        raise AssertionError("free generation ran")

    monkeypatch.setattr(TransformersBackend, "generate", no_free_generation)
    ref = stages.model_eval(cfg, version, evals)
    metrics, info = ref.info["metrics"], ref.info["classification"]
    rows = [json.loads(line) for line in open(ref.dir / "predictions.jsonl")]
    assert len(rows) == metrics["n"] >= 3
    assert all(json.loads(r["prediction"])["category"] in labels for r in rows)
    assert metrics["classification/valid_label"] == 1.0
    # The constrained pass is those same answers, not a second decoding.
    assert metrics["constrained/accuracy"] == metrics["classification/accuracy"]
    assert (info["answers"], info["constrained_reused"]) == ("constrained", metrics["n"])
    assert ref.info["latency"]["requests"] == 2  # single requests are answered the same way


def test_answers_constrained_needs_a_label_field(tmp_path):
    from finetune_pipeline.lib.config import ConfigError

    path = write_config(tmp_path, tmp_path, eval={"classification": {"answers": "constrained"}})
    with pytest.raises(ConfigError, match=r"config.yaml: `answers: constrained` needs eval.classification.field"):
        load_config(path)

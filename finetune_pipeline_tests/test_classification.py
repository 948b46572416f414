"""Classification-aware evaluation: accuracy, macro-F1, valid labels, confusion matrix, constrained generation."""

import json

import pytest

from finetune_pipeline.lib import PROJECT_ROOT, stages
from finetune_pipeline.lib.config import load_config
from finetune_pipeline.lib.evaluation.classification import allowed_outputs, load_labels
from finetune_pipeline.lib.evaluation.confusion import INVALID, confusion_matrix
from finetune_pipeline.lib.evaluation.constrained import (
    eos_token_id,
    generate_constrained,
    output_token_ids,
)
from finetune_pipeline.lib.evaluation.metrics.classification import classification_metrics
from finetune_pipeline.lib.evaluation.report import EvalReport, confusion_of
from finetune_pipeline.lib.training.collate import tokenize_chat
from finetune_pipeline_tests.helpers import write_config, write_jsonl

BANKING77_LABELS = PROJECT_ROOT / "data" / "banking77" / "categories.json"


def out(label):
    return json.dumps({"category": label})


def test_metrics_against_hand_computed_values():
    expected = [out("a"), out("a"), out("b"), out("c")]
    predicted = [out("a"), out("b"), out("b"), "not json"]
    m = classification_metrics(predicted, expected, "category", ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["valid_label"] == pytest.approx(0.75)
    # F1: a = 2/3 (p 1, r 1/2), b = 2/3 (p 1/2, r 1), c = 0 (never predicted) -> mean 4/9.
    assert m["macro_f1"] == pytest.approx(4 / 9)


def test_a_label_outside_the_set_is_not_valid_and_the_matrix_shows_it():
    expected = [out("a"), out("b")]
    predicted = [out("a"), out("z")]  # parses, but "z" is no label
    assert classification_metrics(predicted, expected, "category", ["a", "b"])["valid_label"] == 0.5
    confusion = confusion_matrix(expected, predicted, "category", ["a", "b"])
    axis, matrix = confusion.labels, confusion.matrix
    assert axis == ["a", "b", INVALID] and matrix == [[1, 0, 0], [0, 0, 1], [0, 0, 0]]


def test_labels_from_a_file_or_from_the_training_split(tmp_path):
    assert len(load_labels(BANKING77_LABELS, [], "category")) == 77
    train = [{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": out(v)}]}
             for v in ("b", "a", "b")]
    assert load_labels(None, train, "category") == ["a", "b"]
    bad = tmp_path / "labels.json"
    bad.write_text('{"a": 1}')
    with pytest.raises(ValueError, match="labels.json: expected a non-empty JSON list"):
        load_labels(bad, [], "category")


def test_allowed_outputs_tokenize_as_training_tokenizes_the_answer(tokenizer, tiny_lm):
    model, _ = tiny_lm
    eos = eos_token_id(model, tokenizer)
    messages = [{"role": "user", "content": "Where is my card?"}, {"role": "assistant", "content": out("card_arrival")}]
    trained = tokenize_chat(tokenizer, messages)
    label_ids = [t for t, lab in zip(trained["input_ids"], trained["labels"]) if lab != -100]
    assert output_token_ids(tokenizer, out("card_arrival"), eos) == label_ids[: label_ids.index(eos) + 1]


def test_constrained_generation_only_produces_known_labels(tiny_lm):
    model, tokenizer = tiny_lm
    labels = json.loads(BANKING77_LABELS.read_text())
    conversations = [[{"role": "user", "content": text}] for text in
                     ("My card has not arrived yet", "What is the exchange rate?", "I want a refund", "hi there!")]
    allowed = allowed_outputs("category", labels)
    forced = generate_constrained(model, tokenizer, conversations, allowed, batch_size=3)
    # A random model's free output is gibberish; constrained, every answer is a label.
    assert len(forced) == 4 and all(f in allowed for f in forced)


def test_model_eval_reports_free_and_constrained_classification(tmp_path):
    raw = tmp_path / "raw"
    labels = ["card_arrival", "refund_not_showing_up", "exchange_rate"]
    texts = ["my card is late", "where is my refund", "what rate do you use", "card still not here",
             "refund missing from account", "exchange rate for euros", "has my card been sent",
             "the refund never came", "how much is a dollar in pounds", "card delivery status please"]
    write_jsonl(raw / "rows.jsonl", [{"text": f"{t} (ticket {i})", "category": labels[i % 3]}
                                     for i in range(4) for t in texts])
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    cfg = load_config(write_config(
        tmp_path, raw, data={"mapping": {"format": "table", "labels": ["category"]}, "min_train_rows": 5},
        eval={"classification": {"field": "category", "labels_file": "labels.json", "constrained": True},
              "limit": 6, "max_new_tokens": 8, "batch_size": 8}))
    base = stages.base_model(cfg)
    dataset = stages.training_dataset(cfg, stages.raw_examples(cfg), base)
    ref = stages.model_eval(cfg, base.info["version_key"], stages.eval_set(cfg, dataset))
    metrics = ref.info["metrics"]
    # The free answers' scores, recomputed by hand from the predictions the eval wrote.
    rows = [json.loads(line) for line in open(ref.dir / "predictions.jsonl")]
    gold, free = [_category(r["expected"]) for r in rows], [_category(r["prediction"]) for r in rows]
    assert metrics["classification/accuracy"] == pytest.approx(sum(map(str.__eq__, gold, free)) / len(rows))
    assert metrics["classification/valid_label"] == pytest.approx(sum(f in labels for f in free) / len(rows))
    assert metrics["classification/macro_f1"] == pytest.approx(_macro_f1(gold, free))
    # Constrained answers are always labels; the random model's free ones are not.
    assert metrics["constrained/valid_label"] == 1.0
    assert metrics["classification/valid_label"] < 1.0
    assert (ref.dir / "confusion_category.png").read_bytes()[:4] == b"\x89PNG"
    assert (ref.dir / "confusion_category_constrained.png").is_file()
    forced = [json.loads(line) for line in open(ref.dir / "predictions_constrained.jsonl")]
    assert len(forced) == metrics["n"] >= 3
    assert all(json.loads(r["prediction"])["category"] in labels for r in forced)
    info = ref.info["classification"]
    assert (info["field"], info["labels"], info["notes"]) == ("category", 3, [])
    assert ref.info["eval_seconds"] >= ref.info["generation_seconds"] + info["constrained_seconds"] - 0.01
    # The report keeps the matrix it drew (label set applied); the leaderboard reads that one for this field.
    report = EvalReport.load(ref.dir, with_predictions=True)
    stored = report.classification.confusion
    assert stored == confusion_matrix([r.expected for r in report.predictions],
                                      [r.prediction for r in report.predictions], "category", labels)
    assert sum(map(sum, stored.matrix)) == metrics["n"] and confusion_of(ref.dir, "category") == stored
    assert sum(map(sum, report.classification.constrained_confusion.matrix)) == metrics["n"]
    assert INVALID not in report.classification.constrained_confusion.labels


def _category(text: str) -> str:
    try:
        value = json.loads(text)
    except ValueError:
        return "(no label)"
    return str(value["category"]) if isinstance(value, dict) and value.get("category") is not None else "(no label)"


def _macro_f1(gold: list[str], predicted: list[str]) -> float:
    """F1 per class of the gold labels (2tp / (2tp + fp + fn), 0 when undefined), averaged."""
    scores = []
    for c in sorted(set(gold)):
        tp = sum(g == c and p == c for g, p in zip(gold, predicted))
        wrong = sum((g == c) != (p == c) for g, p in zip(gold, predicted))
        scores.append(2 * tp / (2 * tp + wrong) if tp + wrong else 0.0)
    return sum(scores) / len(scores)


def test_constrained_reuses_free_answers_that_are_already_labels(tiny_lm):
    model, tokenizer = tiny_lm
    labels = ["card_arrival", "exchange_rate", "lost_or_stolen_card"]
    allowed = allowed_outputs("category", labels)
    conversations = [[{"role": "user", "content": t}] for t in ("card not here", "rate for euros", "card stolen")]
    decoded_stats, reused_stats = {}, {}
    decoded = generate_constrained(model, tokenizer, conversations, allowed, batch_size=2, stats=decoded_stats)
    assert decoded_stats == {"reused": 0, "decoded": 3}
    eos = eos_token_id(model, tokenizer)
    # Free ids that spell a label (rows 0, 1) are taken as they are; a free answer off the labels is decoded.
    free = [output_token_ids(tokenizer, decoded[0], eos), output_token_ids(tokenizer, decoded[1], eos),
            tokenizer("not a label", add_special_tokens=False)["input_ids"]]
    again = generate_constrained(model, tokenizer, conversations, allowed, batch_size=2, free_token_ids=free,
                                 stats=reused_stats)
    assert again == decoded and reused_stats == {"reused": 2, "decoded": 1}


def test_free_generation_hands_back_its_token_ids(tiny_lm):
    from finetune_pipeline.lib.evaluation.generate import generate_batched

    model, tokenizer = tiny_lm
    ids: list = []
    texts = generate_batched(model, tokenizer, [[{"role": "user", "content": "hello there"}]] * 2,
                             max_new_tokens=5, batch_size=2, token_ids=ids)
    assert len(ids) == 2 and all(0 < len(x) <= 5 for x in ids)
    assert tokenizer.decode(ids[0], skip_special_tokens=True).strip() == texts[0]

"""Classification metrics for one field of the JSON output (e.g. BANKING77's intent).

accuracy, macro-F1 over the classes of the test set, and `valid_label`: the share
of outputs that parse and name a label of the known label set. scikit-learn
computes the scores; a prediction that is not a known label counts as wrong
(for F1 it is its own "invalid" class, which no gold row has).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

from finetune_pipeline.lib.evaluation.metrics import parse_json_object

INVALID = "<invalid>"


def load_labels(labels_file: Path | None, train_records: Sequence[dict[str, Any]], field: str) -> list[str]:
    """The label set: a JSON list from `labels_file`, else the labels seen in the training split."""
    if labels_file is not None:
        try:
            labels = json.loads(Path(labels_file).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"eval.classification.labels_file {labels_file}: cannot read a JSON list of labels: {e}") from e
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
            raise ValueError(f"eval.classification.labels_file {labels_file}: expected a non-empty JSON list of strings")
        return sorted(set(labels))
    seen = {label_of(r["messages"][-1]["content"], field) for r in train_records}
    seen.discard(None)
    if not seen:
        raise ValueError(f"eval.classification.field {field!r}: no training output has that field; set labels_file")
    return sorted(seen)


def label_of(output: str, field: str) -> str | None:
    obj = parse_json_object(output)
    if obj is None or obj.get(field) is None:
        return None
    return str(obj[field])


def allowed_outputs(field: str, labels: Sequence[str]) -> list[str]:
    """The exact answers a classifier may give: rendered as the table mapping renders training outputs."""
    return [json.dumps({field: label}, ensure_ascii=False) for label in labels]


def _gold_and_predicted(predictions: Sequence[str], expected: Sequence[str], field: str,
                        labels: Sequence[str]) -> tuple[list[str], list[str]]:
    """Labels of each row; an answer that is not a known label (or no answer) becomes INVALID."""
    known = set(labels)
    gold = [label_of(e, field) or INVALID for e in expected]
    pred = [label if (label := label_of(p, field)) in known else INVALID for p in predictions]
    return gold, pred


def classification_metrics(predictions: Sequence[str], expected: Sequence[str], field: str,
                           labels: Sequence[str]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    gold, pred = _gold_and_predicted(predictions, expected, field, labels)
    classes = sorted(set(gold) - {INVALID})
    return {
        "accuracy": float(accuracy_score(gold, pred)),
        "macro_f1": float(f1_score(gold, pred, labels=classes, average="macro", zero_division=0)),
        "valid_label": sum(p != INVALID for p in pred) / len(pred) if pred else 0.0,
    }


def confusion_counts(predictions: Sequence[str], expected: Sequence[str], field: str,
                     labels: Sequence[str]) -> tuple[list[str], list[list[int]]]:
    """Rows: expected label; columns: predicted label, with INVALID last when any output is not a label."""
    from sklearn.metrics import confusion_matrix

    gold, pred = _gold_and_predicted(predictions, expected, field, labels)
    axis = sorted((set(gold) | set(pred)) - {INVALID}) + ([INVALID] if INVALID in pred or INVALID in gold else [])
    return axis, confusion_matrix(gold, pred, labels=axis).tolist()


def evaluate_classification(backend, conversations: Sequence[Sequence[dict]], expected: Sequence[str],
                            predictions: Sequence[str], field: str, labels: Sequence[str], constrained: bool,
                            out_dir: Path, log=print) -> dict[str, Any]:
    """Classification metrics of free generation and, if asked, of label-constrained generation.

    Writes confusion_<field>.png (and confusion_<field>_constrained.png with
    predictions_constrained.jsonl). Returns {"metrics": {...}, "notes": [...]} where
    metrics are flat `classification/...` and `constrained/...` keys.
    """
    from finetune_pipeline.lib.evaluation.charts import confusion_png

    metrics = {f"classification/{k}": v for k, v in classification_metrics(predictions, expected, field, labels).items()}
    axis, matrix = confusion_counts(predictions, expected, field, labels)
    (out_dir / f"confusion_{field}.png").write_bytes(confusion_png(axis, matrix, f"{field}: free generation"))
    notes, extra = [], {}
    if constrained:
        generate = getattr(backend, "generate_constrained", None)
        if generate is None:
            notes.append(f"constrained generation needs eval.backend transformers; {backend.name} has none, "
                         "so only free generation is reported")
        else:
            log(f"constrained generation over {len(labels)} labels")
            started = time.time()
            reuse: dict[str, int] = {}
            forced = generate(conversations, allowed_outputs(field, labels), stats=reuse)
            extra["constrained_seconds"] = round(time.time() - started, 2)
            # Free answers already in the label set are what constrained decoding would pick (constrained.py).
            extra["constrained_reused"] = reuse.get("reused", 0)
            log(f"constrained: {reuse.get('reused', 0)} free answers were already labels (reused), "
                f"{reuse.get('decoded', len(forced))} decoded under the constraint")
            metrics.update({f"constrained/{k}": v for k, v in
                            classification_metrics(forced, expected, field, labels).items()})
            axis, matrix = confusion_counts(forced, expected, field, labels)
            (out_dir / f"confusion_{field}_constrained.png").write_bytes(
                confusion_png(axis, matrix, f"{field}: constrained to the label set"))
            with open(out_dir / "predictions_constrained.jsonl", "w") as f:
                for i, (e, p) in enumerate(zip(expected, forced), start=1):
                    f.write(json.dumps({"line": i, "expected": e, "prediction": p}, ensure_ascii=False) + "\n")
    return {"metrics": metrics, "notes": notes, **extra}

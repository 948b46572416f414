"""Evaluating one model version: generate answers through a backend, score them, build the report.

The one entry point the model_eval stage calls. Generation is the backend's
job (backends.py); every backend and every kind of version is scored by the
same registered metrics (metrics/).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from finetune_pipeline.lib.evaluation.backends import EvalBackend
from finetune_pipeline.lib.evaluation.classification import allowed_outputs
from finetune_pipeline.lib.evaluation.confusion import confusion_matrix
from finetune_pipeline.lib.evaluation.generate import strip_assistant
from finetune_pipeline.lib.evaluation.metrics import Answers, Classification, expected_fields, row_scores, scores
from finetune_pipeline.lib.evaluation.report import Answer, ClassificationReport, EvalReport, PredictionRow
from finetune_pipeline.lib.models.device import describe_device

log = logging.getLogger(__name__)

# Backends that generate on this machine: the eval records this machine's device for its inference cost.
LOCAL_BACKENDS = ("transformers", "vllm")


class ClassificationSettings(BaseModel):
    field: str
    labels: list[str]  # the label set, already loaded (lib/evaluation/classification.py::load_labels)
    constrained: bool = False


class EvalSettings(BaseModel):
    max_new_tokens: int
    classification: ClassificationSettings | None = None


class EvalSubject(BaseModel):
    """What was evaluated on what, as the report names it."""

    version: str
    kind: str
    eval_set: str
    test_file: str


def evaluate(backend: EvalBackend, records: Sequence[dict[str, Any]], settings: EvalSettings,
             subject: EvalSubject) -> EvalReport:
    """Answers for `records` (chat records whose last turn is the reference answer), scored; nothing is written."""
    started = time.time()
    conversations = [strip_assistant(r["messages"]) for r in records]
    expected = [r["messages"][-1]["content"] for r in records]
    predictions = backend.generate(conversations, settings.max_new_tokens)
    generation_seconds = time.time() - started
    answers = Answers(predictions, expected, expected_fields(expected))  # refuses a count that does not match
    part, forced = None, []
    if settings.classification is not None:
        classification, part, forced = _classify(backend, conversations, expected, predictions,
                                                 settings.classification)
        answers = dataclasses.replace(answers, classification=classification)
    rows = [PredictionRow(line=i, input=c[-1]["content"], expected=e, prediction=p, **s)
            for i, (c, e, p, s) in enumerate(zip(conversations, expected, predictions, row_scores(answers)), start=1)]
    metrics = scores(answers)
    return EvalReport(metrics=metrics, fields=list(answers.fields), classification=part,
                      generation_seconds=round(generation_seconds, 2), **subject.model_dump(),
                      backend=backend.identity(), eval_seconds=round(time.time() - started, 2),
                      device=describe_device(processes=1) if backend.name in LOCAL_BACKENDS else None,
                      predictions=rows, constrained_predictions=forced)


def _classify(backend: EvalBackend, conversations: list[list[dict]], expected: list[str], predictions: list[str],
              c: ClassificationSettings) -> tuple[Classification, ClassificationReport, list[Answer]]:
    """Label-constrained generation if asked (and the backend can), and the confusion matrices."""
    part = ClassificationReport(field=c.field, labels=len(c.labels))
    forced = None
    if c.constrained:
        generate = getattr(backend, "generate_constrained", None)
        if generate is None:
            part.notes.append(f"constrained generation needs eval.backend transformers or vllm; {backend.name} has "
                              "none, so only free generation is reported")
        else:
            log.info("constrained generation over %d labels", len(c.labels))
            started = time.time()
            reuse: dict[str, int] = {}
            forced = generate(conversations, allowed_outputs(c.field, c.labels), stats=reuse)
            part.constrained_seconds = round(time.time() - started, 2)
            # Free answers already in the label set are what constrained decoding would pick (constrained.py).
            part.constrained_reused = reuse.get("reused", 0)
            log.info("constrained: %d free answers were already labels (reused), %d decoded under the constraint",
                     reuse.get("reused", 0), reuse.get("decoded", len(forced)))
            part.constrained_confusion = confusion_matrix(expected, forced, c.field, c.labels)
    for note in part.notes:
        log.info("model_eval: %s", note)
    part.confusion = confusion_matrix(expected, predictions, c.field, c.labels)
    rows = [Answer(line=i, expected=e, prediction=p) for i, (e, p) in enumerate(zip(expected, forced or []), start=1)]
    return Classification(c.field, c.labels, forced), part, rows

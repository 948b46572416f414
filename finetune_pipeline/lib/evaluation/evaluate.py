"""Evaluating one model version: generate answers through a backend, score them, build the report.

The one entry point the model_eval stage calls. Generation is the backend's
job (backends.py); every backend and every kind of version is scored by the
same registered metrics (metrics/).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel

from finetune_pipeline.lib.evaluation.backend_errors import BackendError
from finetune_pipeline.lib.evaluation.backends import EvalBackend
from finetune_pipeline.lib.evaluation.classification import allowed_outputs
from finetune_pipeline.lib.evaluation.config import AnswerMode
from finetune_pipeline.lib.evaluation.confusion import confusion_matrix
from finetune_pipeline.lib.evaluation.generate import strip_assistant
from finetune_pipeline.lib.evaluation.metrics import Answers, Classification, expected_fields, row_scores, scores
from finetune_pipeline.lib.evaluation.prompt_recipe import PromptRecipe
from finetune_pipeline.lib.evaluation.report import (
    Answer,
    ClassificationReport,
    EvalReport,
    Latency,
    PredictionRow,
    PromptInfo,
    RankedAnswer,
    TokenUsage,
)
from finetune_pipeline.lib.evaluation.resampling import intervals
from finetune_pipeline.lib.models.device import describe_device

log = logging.getLogger(__name__)

# Backends that generate on this machine: the eval records this machine's device for its inference cost.
LOCAL_BACKENDS = ("transformers", "vllm")


class ClassificationSettings(BaseModel):
    field: str
    labels: list[str]  # the label set, already loaded (lib/evaluation/classification.py::load_labels)
    constrained: bool = False
    likelihood: bool = False  # rank every label by its likelihood (lib/evaluation/likelihood.py)
    answers: AnswerMode = "free"  # constrained: the main answers are label-constrained decoding, no free generation


class EvalSettings(BaseModel):
    max_new_tokens: int
    classification: ClassificationSettings | None = None
    prompt: PromptRecipe | None = None  # a prompting baseline's shots and constraint, applied to every row
    prompt_key: str = ""  # its prompt_recipe artifact
    latency_requests: int = 0  # rows also sent one at a time, for the latency percentiles
    resamples: int = 1000  # bootstrap resamples of the metrics' intervals


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
    recipe = settings.prompt
    if recipe is not None:  # what the prompted version sends: the shots before every row's user turn
        conversations = [recipe.apply(c) for c in conversations]
    labelled = _answers_are_labels(settings)
    answer = _answerer(backend, settings, labelled)
    predictions = answer(conversations)
    generation_seconds = time.time() - started
    answers = Answers(predictions, expected, expected_fields(expected))  # refuses a count that does not match
    part, forced, ranked = None, [], []
    if settings.classification is not None:
        classification, part, forced, ranked = _classify(backend, conversations, expected, predictions,
                                                         settings.classification, labelled)
        answers = dataclasses.replace(answers, classification=classification)
    rows = [PredictionRow(line=i, input=c[-1]["content"], expected=e, prediction=p, **s)
            for i, (c, e, p, s) in enumerate(zip(conversations, expected, predictions, row_scores(answers)), start=1)]
    metrics = scores(answers)
    bounds = intervals(answers, resamples=settings.resamples)
    tokens = token_usage(backend, conversations, predictions)
    # Last: single requests after the batched ones (the backend's model is loaded and warm by now).
    latency = measure_latency(answer, conversations[: settings.latency_requests])
    prompt = None if recipe is None else PromptInfo(recipe=settings.prompt_key, shots=len(recipe.shots),
                                                    constraint=recipe.constraint)
    return EvalReport(metrics=metrics, fields=list(answers.fields), classification=part,
                      generation_seconds=round(generation_seconds, 2), **subject.model_dump(),
                      backend=backend.identity(), eval_seconds=round(time.time() - started, 2),
                      device=describe_device(processes=1) if backend.name in LOCAL_BACKENDS else None,
                      intervals=bounds, latency=latency, tokens=tokens, prompt=prompt,
                      predictions=rows, constrained_predictions=forced, ranked=ranked)


def _answers_are_labels(settings: EvalSettings) -> bool:
    """True if the main answers are decoded under the label set (eval.classification.answers: constrained)."""
    c, recipe = settings.classification, settings.prompt
    # A constrained prompting baseline keeps its own constraint (e.g. the JSON shape), which is not the label set.
    return c is not None and c.answers == "constrained" and not (recipe is not None and recipe.constraint)


def _answerer(backend: EvalBackend, settings: EvalSettings, labelled: bool) -> Callable[[list], list[str]]:
    """Free greedy generation, a constrained prompting baseline's structured decoding, or label-constrained
    decoding (`labelled`: eval.classification.answers: constrained, see _answers_are_labels)."""
    recipe = settings.prompt
    if labelled:
        allowed, what = allowed_outputs(settings.classification.field, settings.classification.labels), \
            "eval.classification.answers: constrained"
    elif recipe is not None and recipe.constraint:
        allowed, what = recipe.allowed_outputs, f"a constrained baseline ({recipe.constraint})"
    else:
        return lambda conversations: backend.generate(conversations, settings.max_new_tokens)
    generate = getattr(backend, "generate_constrained", None)
    if generate is None:
        raise BackendError(f"{what} needs eval.backend transformers or vllm; {backend.name} cannot constrain "
                           "decoding")
    return lambda conversations: generate(conversations, allowed)


def measure_latency(answer: Callable[[list], list[str]], conversations: list) -> Latency | None:
    """Each conversation sent alone, timed: p50 and p95 of one request's seconds."""
    if not conversations:
        return None
    seconds = []
    for conversation in conversations:
        started = time.perf_counter()
        answer([conversation])
        seconds.append(time.perf_counter() - started)
    p50, p95 = (float(x) for x in np.percentile(seconds, [50, 95]))
    return Latency(requests=len(seconds), p50_s=round(p50, 4), p95_s=round(p95, 4),
                   mean_s=round(float(np.mean(seconds)), 4))


def token_usage(backend: EvalBackend, conversations: list, predictions: list[str]) -> TokenUsage | None:
    """Prompt and answer tokens per request: the endpoint's billed usage, else the version's own tokenizer."""
    usage = getattr(backend, "usage", None)
    if usage:
        return TokenUsage(prompt_per_request=round(sum(u[0] for u in usage) / len(usage), 1),
                          completion_per_request=round(sum(u[1] for u in usage) / len(usage), 1),
                          counted_by="api usage")
    model_dir = getattr(backend, "model_dir", None)
    if model_dir is None or not conversations:
        return None
    from finetune_pipeline.lib.models.base_models import load_tokenizer
    from finetune_pipeline.lib.training.collate import _render_ids

    tokenizer = load_tokenizer(model_dir)
    prompt = sum(len(_render_ids(tokenizer, list(c), add_generation_prompt=True)) for c in conversations)
    answer = sum(len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in predictions)
    return TokenUsage(prompt_per_request=round(prompt / len(conversations), 1),
                      completion_per_request=round(answer / len(conversations), 1), counted_by="tokenizer")


def _classify(backend: EvalBackend, conversations: list[list[dict]], expected: list[str], predictions: list[str],
              c: ClassificationSettings, labelled: bool = False
              ) -> tuple[Classification, ClassificationReport, list[Answer], list[RankedAnswer]]:
    """Label-constrained generation and likelihood ranking if asked (and the backend can), and the confusion
    matrices. `labelled`: the main answers already are label-constrained decoding."""
    part = ClassificationReport(field=c.field, labels=len(c.labels), label_set=list(c.labels),
                                answers="constrained" if labelled else "free")
    forced = None
    if labelled:
        part.notes.append("answers: decoded under the label set (eval.classification.answers: constrained); no "
                          "free generation ran, so valid_label is 1 by construction")
    if c.constrained and labelled:  # the constrained pass would decode the same answers again
        forced, part.constrained_seconds, part.constrained_reused = list(predictions), 0.0, len(predictions)
        part.constrained_confusion = confusion_matrix(expected, forced, c.field, c.labels)
    elif c.constrained:
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
    top = _rank(backend, conversations, expected, c, part) if c.likelihood else None
    for note in part.notes:
        log.info("model_eval: %s", note)
    part.confusion = confusion_matrix(expected, predictions, c.field, c.labels)
    classification = Classification(c.field, c.labels, forced, top)
    rows = [Answer(line=i, expected=e, prediction=p) for i, (e, p) in enumerate(zip(expected, forced or []), start=1)]
    ranked = [RankedAnswer(line=i, expected=e, prediction=p, top=list(t)) for i, (e, p, t) in
              enumerate(zip(expected, classification.likelihood or [], top or []), start=1)]
    return classification, part, rows, ranked


def _rank(backend: EvalBackend, conversations: list[list[dict]], expected: list[str], c: ClassificationSettings,
          part: ClassificationReport) -> list[list[str]] | None:
    """Each row's labels ranked by likelihood (best first), or None with a note if the backend cannot score."""
    from finetune_pipeline.lib.evaluation.metrics.likelihood import TOP_K

    rank = getattr(backend, "rank_labels", None)
    if rank is None:
        part.notes.append(f"likelihood scoring needs eval.backend transformers; {backend.name} has none, so "
                          "no likelihood/... metrics are reported")
        return None
    log.info("likelihood scoring of %d labels", len(c.labels))
    started = time.time()
    top = rank(conversations, c.field, c.labels, TOP_K)
    part.likelihood_seconds = round(time.time() - started, 2)
    part.likelihood_confusion = confusion_matrix(
        expected, Classification(c.field, c.labels, ranked=top).likelihood, c.field, c.labels)
    return top

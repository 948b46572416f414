"""A model_eval artifact's report: report.json, predictions.jsonl and the classification files.

`EvalReport.save(folder)` writes them all; `EvalReport.load(folder)` reads
report.json (and, when asked, the prediction rows). The JSON keys are the ones
readers have always used (leaderboard, Dagster metadata, lineage info).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from finetune_pipeline.lib.evaluation.confusion import ConfusionMatrix, confusion_matrix
from finetune_pipeline.lib.evaluation.significance import ConfidenceInterval
from finetune_pipeline.lib.models.device import DeviceInfo
from finetune_pipeline.lib.reporting.charts import confusion_file, confusion_png

REPORT, PREDICTIONS, CONSTRAINED_PREDICTIONS = "report.json", "predictions.jsonl", "predictions_constrained.jsonl"
RANKED_PREDICTIONS = "predictions_likelihood.jsonl"

# Metric name -> value over the eval set: fractions in [0, 1], and `n` (rows scored) as an int.
MetricValues = dict[str, float | int]


class Answer(BaseModel):
    """One eval row's expected output and the model's answer; `line` counts from 1 in the test split."""

    line: int
    expected: str
    prediction: str


class RankedAnswer(Answer):
    """Likelihood scoring of one row: `prediction` is the most likely label's answer, `top` the labels ranked."""

    top: list[str]  # the most likely labels, best first (metrics/likelihood.py::TOP_K of them)


class PredictionRow(BaseModel):
    """A line of predictions.jsonl: the row's last user input, the answer, and each metric's per-row score."""

    # The per-row scores (exact_match, valid_json, fields, ...) are whatever the
    # registered metrics give (lib/evaluation/metrics), so they are not fixed here.
    model_config = ConfigDict(extra="allow")

    line: int
    input: str
    expected: str
    prediction: str

    def scores(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ClassificationReport(BaseModel):
    """The classification part (eval.classification.field): labels, notes, constrained timing, confusion matrices."""

    field: str
    labels: int  # how many labels the label set has
    label_set: list[str] = Field(default_factory=list)  # the labels themselves (empty in older reports)
    answers: str = "free"  # constrained: the main answers were decoded under the label set (no free generation)
    notes: list[str] = Field(default_factory=list)
    constrained_seconds: float | None = None  # these two: only when constrained generation ran
    constrained_reused: int | None = None
    confusion: ConfusionMatrix | None = None  # free generation; None in reports written before it was stored
    constrained_confusion: ConfusionMatrix | None = None
    likelihood_seconds: float | None = None  # these two: only when likelihood scoring ran
    likelihood_confusion: ConfusionMatrix | None = None


class Latency(BaseModel):
    """Seconds one request takes when sent alone (not batched): what a user waiting on one answer sees."""

    requests: int
    p50_s: float
    p95_s: float
    mean_s: float


class TokenUsage(BaseModel):
    """Tokens per request: the prompt sent (chat template, shots included) and the answer generated."""

    prompt_per_request: float
    completion_per_request: float
    counted_by: str  # "tokenizer" (the version's own) or "api usage" (what the endpoint billed)


class PromptInfo(BaseModel):
    """A prompting baseline's recipe, as this eval applied it."""

    recipe: str  # the prompt_recipe artifact key
    shots: int
    constraint: str = ""


class EvalReport(BaseModel):
    metrics: MetricValues
    fields: list[str]  # the keys of the expected JSON outputs
    classification: ClassificationReport | None = None
    generation_seconds: float
    version: str
    kind: str
    eval_set: str
    test_file: str
    backend: dict[str, Any]  # the backend's identity, as in the recipe
    eval_seconds: float
    # What generated: this machine's device for a local backend; None behind an endpoint (or in older reports).
    device: DeviceInfo | None = None
    # Bootstrap 95% intervals by metric name; latency of single requests; tokens per request (None: older reports).
    intervals: dict[str, ConfidenceInterval] = Field(default_factory=dict)
    latency: Latency | None = None
    tokens: TokenUsage | None = None
    prompt: PromptInfo | None = None
    # Saved beside report.json, not in it.
    predictions: list[PredictionRow] = Field(default_factory=list, exclude=True)
    constrained_predictions: list[Answer] = Field(default_factory=list, exclude=True)
    ranked: list[RankedAnswer] = Field(default_factory=list, exclude=True)

    def to_json(self) -> dict[str, Any]:
        """report.json's content (also the artifact's lineage info); absent parts are left out, not null."""
        return self.model_dump(exclude_none=True)

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        (folder / REPORT).write_text(json.dumps(self.to_json(), indent=2) + "\n")
        _write_rows(self.predictions, folder / PREDICTIONS)
        c = self.classification
        if c is not None and c.confusion is not None:
            (folder / confusion_file(c.field)).write_bytes(
                confusion_png(c.confusion.labels, c.confusion.matrix, f"{c.field}: free generation"))
        if c is not None and c.constrained_confusion is not None:
            forced = c.constrained_confusion
            (folder / confusion_file(c.field, "_constrained")).write_bytes(
                confusion_png(forced.labels, forced.matrix, f"{c.field}: constrained to the label set"))
        if c is not None and c.likelihood_confusion is not None:
            ranked = c.likelihood_confusion
            (folder / confusion_file(c.field, "_likelihood")).write_bytes(
                confusion_png(ranked.labels, ranked.matrix, f"{c.field}: the most likely label"))
        if self.constrained_predictions:
            _write_rows(self.constrained_predictions, folder / CONSTRAINED_PREDICTIONS)
        if self.ranked:
            _write_rows(self.ranked, folder / RANKED_PREDICTIONS)

    @classmethod
    def load(cls, folder: Path, with_predictions: bool = False) -> "EvalReport":
        folder = Path(folder)
        report = cls.model_validate_json((folder / REPORT).read_text())
        if with_predictions:
            report.predictions = read_predictions(folder)
            if (folder / CONSTRAINED_PREDICTIONS).is_file():
                report.constrained_predictions = [Answer.model_validate_json(line) for line in
                                                  _lines(folder / CONSTRAINED_PREDICTIONS)]
            if (folder / RANKED_PREDICTIONS).is_file():
                report.ranked = [RankedAnswer.model_validate_json(line) for line in _lines(folder / RANKED_PREDICTIONS)]
        return report


def read_predictions(folder: Path) -> list[PredictionRow]:
    return [PredictionRow.model_validate_json(line) for line in _lines(Path(folder) / PREDICTIONS)]


def confusion_of(folder: Path, field: str) -> ConfusionMatrix:
    """A model_eval folder's confusion matrix for `field`: the one model_eval stored for its classification
    field (label set applied), else the same function over its predictions without a label set."""
    report = EvalReport.load(folder)
    c = report.classification
    if c is not None and c.field == field and c.confusion is not None:
        return c.confusion
    rows = read_predictions(folder)
    return confusion_matrix([r.expected for r in rows], [r.prediction for r in rows], field)


def _write_rows(rows: list[Answer] | list[RankedAnswer] | list[PredictionRow], path: Path) -> None:
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row.model_dump(), ensure_ascii=False) + "\n")


def _lines(path: Path) -> list[str]:
    with open(path) as f:
        return [line for line in f if line.strip()]

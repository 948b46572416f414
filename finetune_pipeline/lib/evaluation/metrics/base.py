"""The tiny base every metric builds on, and what metrics are given to score."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Classification:
    """Set when eval.classification.field is: the field, its label set, label-constrained answers and the
    labels ranked by likelihood."""

    field: str
    labels: Sequence[str]
    constrained: Sequence[str] | None = None  # None: constrained generation did not run
    ranked: Sequence[Sequence[str]] | None = None  # each row's most likely labels, best first; None: not scored

    @property
    def likelihood(self) -> list[str] | None:
        """The most likely label of each row, as the JSON answer the model would give."""
        if self.ranked is None:
            return None
        return [json.dumps({self.field: top[0]}, ensure_ascii=False) for top in self.ranked]

    def answers_of(self, family: str, free: Sequence[str]) -> Sequence[str]:
        """The answers a metric family scores: constrained/..., likelihood/..., else the free ones."""
        if family == "constrained" and self.constrained is not None:
            return self.constrained
        if family == "likelihood" and self.ranked is not None:
            return self.likelihood
        return free

    def subset(self, rows: Sequence[int]) -> Classification:
        """The same, restricted to `rows` (indices, repeats allowed: a bootstrap resample)."""
        return dataclasses.replace(
            self, constrained=None if self.constrained is None else [self.constrained[i] for i in rows],
            ranked=None if self.ranked is None else [self.ranked[i] for i in rows])


@dataclass(frozen=True)
class Answers:
    """What a model answered on the eval set, beside the expected outputs, row by row."""

    predictions: Sequence[str]
    expected: Sequence[str]
    fields: Sequence[str] = ()  # the keys of the expected JSON objects (accuracy/<field>)
    classification: Classification | None = None

    def __post_init__(self):
        if len(self.predictions) != len(self.expected):
            raise ValueError(f"{len(self.predictions)} predictions for {len(self.expected)} eval records")

    def pairs(self) -> Iterable[tuple[str, str]]:
        return zip(self.predictions, self.expected)


class Metric:
    """One metric, or a family of them sharing a prefix ("accuracy/<field>", "classification/<m>").

    `names`: the exact names it reports; a family sets `prefix` instead and
    overrides `known` if only some names under it exist.
    """

    names: tuple[str, ...] = ()
    prefix: str = ""

    def known(self, name: str) -> bool:
        """Could this metric report `name` (for checking promotion.primary_metric)?"""
        return name in self.names or bool(self.prefix) and name.startswith(self.prefix) and name != self.prefix

    def row_scores(self, prediction: str, expected: str, answers: Answers) -> dict[str, Any]:
        """This metric's score of one row, written into predictions.jsonl; none by default."""
        return {}

    def scores(self, answers: Answers) -> dict[str, float]:
        """The values it reports for the whole eval set, by name."""
        raise NotImplementedError


class RowMetric(Metric):
    """A metric that is the share of rows passing a per-row test: implement `passes`."""

    name: str

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.names = (cls.name,)

    def passes(self, prediction: str, expected: str) -> bool:
        raise NotImplementedError

    def row_scores(self, prediction: str, expected: str, answers: Answers) -> dict[str, Any]:
        return {self.name: self.passes(prediction, expected)}

    def scores(self, answers: Answers) -> dict[str, float]:
        return {self.name: share(self.passes(p, e) for p, e in answers.pairs())}


def share(flags: Iterable[bool]) -> float:
    """The fraction of true values; 0.0 for none (an empty eval set scores 0, not NaN)."""
    flags = list(flags)
    return sum(flags) / len(flags) if flags else 0.0

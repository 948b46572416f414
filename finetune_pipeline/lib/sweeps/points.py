"""A sweep's points: the grid's combinations and the listed points, each a named TrainConfig.

A point's name is made from its own settings only (ep2-lr0.0005), never from its
position, so adding a point renames none of the others: the name is a Dagster
partition key, and what a point trains is keyed by its TrainConfig (the adapter's
recipe), so a point already trained is a cache hit whatever it is called.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from finetune_pipeline.lib.section import Rule
from finetune_pipeline.lib.sweeps.config import MAX_POINTS, POINT_NAME, SweepConfig
from finetune_pipeline.lib.training.config import TrainConfig

# Where the child runs does not change what it trains (they are not in the adapter's recipe): sweeping them
# would train the same adapter twice under two names.
NOT_SWEPT = ("runner", "pod")
# Short names in point names; any other setting is named by its last part.
SHORT = {"learning_rate": "lr", "epochs": "ep", "lora.r": "r", "lora.alpha": "alpha", "lora.dropout": "drop",
         "lora.target_modules": "tm", "general_mix_ratio": "mix", "batch_size": "bs", "max_steps": "steps",
         "gradient_accumulation_steps": "ga", "warmup_ratio": "warmup"}


@dataclass(frozen=True)
class SweepPoint:
    name: str
    source: str  # where it was declared: sweep.grid or sweep.points[i]
    overrides: dict[str, Any]  # dotted train setting -> value, as declared
    train: TrainConfig  # the config's train section with the overrides applied

    def settings_text(self) -> str:
        return ", ".join(f"{k}={_value_text(v)}" for k, v in self.overrides.items()) or "as configured"


def expand(sweep: SweepConfig, base: TrainConfig) -> list[SweepPoint]:
    """Every point of the sweep, grid first then the listed points; raises a Rule with one line per problem."""
    declared: list[tuple[str, dict[str, Any], str | None]] = []
    if sweep.grid:
        keys = list(sweep.grid)
        declared += [("sweep.grid", dict(zip(keys, combo)), None)
                     for combo in itertools.product(*(sweep.grid[k] for k in keys))]
    for i, point in enumerate(sweep.points):
        point = dict(point)
        name = point.pop("name", None)
        declared.append((f"sweep.points[{i}]", _flatten(point), name))
    if len(declared) > MAX_POINTS:
        raise Rule(f"`sweep` declares {len(declared)} points; at most {MAX_POINTS} (a grid multiplies: "
                   f"{' x '.join(str(len(v)) for v in sweep.grid.values()) or '-'})")

    problems: list[str] = []
    points: list[SweepPoint] = []
    for source, overrides, name in declared:
        label = f"{source} ({name or _auto_name(overrides)})"
        if name is not None and not (isinstance(name, str) and POINT_NAME.match(name)):
            problems.append(f"{source}: name must be 1-64 letters, digits, '.', '_' or '-', starting with a letter "
                            "or digit")
            continue
        bad = [k for k in overrides if k.split(".")[0] in NOT_SWEPT]
        if bad:
            problems.append(f"{label}: train.{bad[0]} cannot be swept: where training runs does not change what "
                            "it trains")
            continue
        try:
            train = TrainConfig.model_validate(_merge(base.model_dump(mode="json"), _nest(overrides)))
        except ValidationError as e:
            problems += [f"{label}: {line}" for line in _train_errors(e)]
            continue
        points.append(SweepPoint(name or _auto_name(overrides), source, overrides, train))

    seen: dict[str, SweepPoint] = {}
    same: dict[str, SweepPoint] = {}
    for p in points:
        if p.name in seen:
            problems.append(f"{p.source} and {seen[p.name].source} are both named {p.name!r}; give one a `name`")
        seen.setdefault(p.name, p)
        trained = json.dumps(p.train.model_dump(mode="json"), sort_keys=True)
        if trained in same:
            problems.append(f"{p.source} ({p.name}) trains exactly what {same[trained].source} "
                            f"({same[trained].name}) trains; drop one")
        same.setdefault(trained, p)
    if problems:
        raise Rule(*problems)
    return points


def _train_errors(error: ValidationError) -> list[str]:
    """pydantic's errors of a point's TrainConfig, one line each, naming the train field; never the value."""
    lines = []
    for e in error.errors():
        field = "train" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"])
        rule = e.get("ctx", {}).get("error")
        if isinstance(rule, Rule):  # a rule across train fields: its fields written with their full path
            lines += rule.render("train.")
        elif e["type"] == "extra_forbidden":
            lines.append(f"{field} is not a train setting")
        else:
            lines.append(f"{field}: {e['msg'][0].lower()}{e['msg'][1:]} (got {_kind(e['input'])})")
    return lines


def _kind(value: Any) -> str:
    # The type only: a value can be long, and the error line should read the same whatever it was.
    return {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "a list",
            dict: "a mapping", type(None): "null"}.get(type(value), f"a {type(value).__name__}")


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in values.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, last = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return out


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return format(value, "g")
    if isinstance(value, list):
        return "+".join(_value_text(v) for v in value)
    return str(value)


def _auto_name(overrides: dict[str, Any]) -> str:
    """ep2-lr0.0005: each setting's short name and value, by setting name (so the order keys are written in
    changes nothing); only partition-key-safe characters."""
    if not overrides:
        return "as-configured"
    parts = [SHORT.get(k, k.split(".")[-1]) + _value_text(v).replace("+", ".") for k, v in sorted(overrides.items())]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts)).strip("._-")
    return name[:64] or "point"

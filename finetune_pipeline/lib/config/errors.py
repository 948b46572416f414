"""ConfigError, and pydantic's validation errors as one line per problem.

A line names the file, the field's path (train.epochs), what the field allows
and the type of what it got, never the value itself (it may be a secret):

    configs/x.yaml: train.epochs must be a number > 0 (got a string)

Rules across fields (a section's model validator) name every field they are
about with its full path; unknown keys are named with the section's known keys.
"""

from __future__ import annotations

import datetime
import difflib
from typing import Any

from pydantic import ValidationError

from finetune_pipeline.lib.config.schema import allowed, bounds, node_at, number_text, resolve
from finetune_pipeline.lib.section import Rule


class ConfigError(ValueError):
    """A config file or value is wrong: one line per problem, each naming the file and the field."""

    def __init__(self, *lines: str):
        self.lines = [part for line in lines for part in str(line).splitlines()]
        super().__init__("\n".join(self.lines))


# What a bound error says about the value, from its ctx: "<= 0" for a failed gt=0.
_VIOLATION = {
    "greater_than": lambda c: f"<= {number_text(c['gt'])}",
    "greater_than_equal": lambda c: f"< {number_text(c['ge'])}",
    "less_than": lambda c: f">= {number_text(c['lt'])}",
    "less_than_equal": lambda c: f"> {number_text(c['le'])}",
}
_TOO = {"string_too_short", "string_too_long", "too_short", "too_long"}


def kind_of(value: Any) -> str:
    """The JSON/YAML type of a value, in words: what an error may say about it."""
    if value is None:
        return "null"
    for types, word in ((bool, "a boolean"), (int, "an integer"), (float, "a float"), (str, "a string"),
                        ((list, tuple), "a list"), (dict, "a mapping"), (datetime.datetime, "a timestamp"),
                        (datetime.date, "a date")):
        if isinstance(value, types):
            return word
    return f"a {type(value).__name__}"


def dotted(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_MISSING = object()


def _value_at(values: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        try:
            values = values[part]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return values


def _got(value: Any, path: tuple[str | int, ...], errors: list[dict[str, Any]]) -> str:
    """"a string", "an integer <= 0", "another string" (a string that is none of the choices)..."""
    got = kind_of(value)
    if isinstance(value, list):
        # The list was right, an item was not (loc ends in the item's index): say what the item is.
        inner = next((e for e in errors if tuple(e["loc"][:len(path)]) == path and isinstance(e["loc"][-1], int)),
                     None)
        if inner is not None:
            return f"a list holding {kind_of(inner['input'])}"
    for e in errors:
        if e["type"] in _VIOLATION:
            return f"{got} {_VIOLATION[e['type']](e.get('ctx', {}))}"
        if e["type"] in _TOO:
            n = e.get("ctx", {}).get("min_length" if "short" in e["type"] else "max_length")
            if e["type"] == "string_too_short" and n == 1:
                return "an empty string"
            unit = "characters" if e["type"].startswith("string") else "items"
            return f"{got} {'shorter' if 'short' in e['type'] else 'longer'} than {n} {unit}"
    if isinstance(value, str) and any(e["type"] == "literal_error" for e in errors):
        return "another string"
    return got


def _field_line(path: tuple[str | int, ...], node: dict[str, Any], errors: list[dict[str, Any]], values: Any) -> str:
    name = dotted(path)
    types = {e["type"] for e in errors}
    if "missing" in types:
        return f"{name} is required ({allowed(node)})"
    custom = next((e for e in errors if e["type"] == "value_error"), None)
    if custom is not None:  # a field validator's own words: "is not an IANA time zone"
        return f"{name} {custom.get('ctx', {}).get('error', custom['msg'])}"
    value = _value_at(values, path)
    value = errors[0].get("input") if value is _MISSING else value
    # Right type, out of bounds: the bounds are the news ("must be >= 1"), not the type.
    if "anyOf" not in node and types <= set(_VIOLATION) | _TOO:
        return f"{name} must be {bounds(node)} (got {_got(value, path, errors)})"
    return f"{name} must be {allowed(node)} (got {_got(value, path, errors)})"


def validation_lines(error: ValidationError, where: str, values: Any = None) -> list[str]:
    """One line per problem in `error`, a validation of PipelineConfig from `values` (read from `where`)."""
    entries: dict[tuple[str, tuple[str | int, ...]], list[dict[str, Any]]] = {}
    for e in error.errors():
        loc = tuple(e["loc"])
        exc = e.get("ctx", {}).get("error")
        if e["type"] == "extra_forbidden":
            key = ("unknown", loc[:-1])
        elif isinstance(exc, Rule):
            key = ("rule", loc)
        else:
            key = ("field", node_at(loc)[0])  # a union's member errors are one problem of the field
        entries.setdefault(key, []).append(e)

    lines = []
    for (kind, path), errors in entries.items():
        if kind == "unknown":
            lines.append(_unknown_line(path, [str(e["loc"][-1]) for e in errors]))
        elif kind == "rule":
            prefix = f"{dotted(path)}." if path else ""
            lines += [m for e in errors for m in e["ctx"]["error"].render(prefix)]
        else:
            lines.append(_field_line(path, node_at(path)[1], errors, values))
    return [f"{where}: {line}" for line in lines]


def _unknown_line(parent: tuple[str | int, ...], keys: list[str]) -> str:
    known = sorted(resolve(node_at(parent)[1]).get("properties", {}))
    hints = [f"{match[0]!r} for {key!r}" for key in keys if (match := difflib.get_close_matches(key, known, n=1))]
    return (f"{dotted(parent) or 'the config'} has unknown field(s) {keys!r}; known: {', '.join(known)}"
            + (f" (did you mean {', '.join(hints)}?)" if hints else ""))

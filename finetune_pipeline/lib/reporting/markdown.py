"""Markdown for metadata and reports: one table builder, and PNGs inlined so the Dagster UI shows them."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any


def fmt(value: object, digits: int = 3) -> str:
    """A cell's text: floats to `digits` places, None as "-", anything else as str()."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]], max_width: int | None = None) -> str:
    """A GitHub markdown table; cells go through `fmt`, pipes and newlines are escaped, long text is cut."""

    def cell(value: object) -> str:
        text = fmt(value).replace("|", "\\|").replace("\n", " ")
        return text if max_width is None or len(text) <= max_width else text[: max_width - 1] + "…"

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


HEADLINE_METRICS = ("exact_match", "valid_json")


def metrics_table(rows: Mapping[str, Mapping[str, float]], metrics: Sequence[str] | None = None,
                  intervals: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """{version: {metric: value}} as a table; by default every row's metrics in one fixed order.

    `intervals` ({version: {metric: an interval with .low and .high}}) adds "[low, high]" after a value.

    The fixed order (the headline metrics, then the rest by name, `n` last) keeps a fresh report and
    the same report read back from its lineage (JSON with sorted keys) printing the same columns.
    """
    if metrics is None:
        names = {k for values in rows.values() for k in values}
        headline = [k for k in HEADLINE_METRICS if k in names]
        metrics = headline + sorted(names - set(headline) - {"n"}) + (["n"] if "n" in names else [])
    intervals = intervals or {}
    return markdown_table(["version", *metrics], ([version, *(with_interval(values.get(m, ""),
                                                                            intervals.get(version, {}).get(m))
                                                              for m in metrics)]
                                                  for version, values in rows.items()))


def with_interval(value: Any, interval: Any) -> Any:
    """`value [low, high]` (an interval: anything with .low and .high), or the value alone."""
    if interval is None or value in ("", None):
        return value
    return f"{fmt(value)} [{fmt(interval.low)}, {fmt(interval.high)}]"


def png_markdown(png: bytes | str | Path, alt: str) -> str:
    """A PNG (its bytes or its file) inlined as a data URI, which the Dagster UI renders on the asset page."""
    data = png if isinstance(png, bytes) else Path(png).read_bytes()
    return f"![{alt}](data:image/png;base64,{base64.b64encode(data).decode()})"

"""Raw row formats: how one row of a raw file becomes chat messages (`data.mapping.format`).

Each format is one module here with a `FORMAT` object, listed once in
`FORMATS` below. A format says which columns it cannot do without (a file
lacking one is refused as a whole, naming the column) and turns one row into
messages, raising `RowError` with a rule name for a row it cannot map (that
row is quarantined with the rule, never dropped).

Adding a format: write `formats/<name>.py` with a `FORMAT` (see `table.py`,
about twenty lines) and add it to `FORMATS`. `data.mapping.format` accepts
its name from then on.
"""

from __future__ import annotations

from typing import Any, Protocol

from finetune_pipeline.lib.data.formats import chat, seed, table


# `mapping` below is a ColumnMapping (data/config.py). It is not imported here: the config validates
# `format` against FORMATS, so it imports this package, and an import back would be a cycle.
class RowFormat(Protocol):
    name: str
    help: str  # one line: what the raw rows look like

    def required_columns(self, mapping: Any) -> list[str]: ...

    def to_messages(self, data: dict[str, Any], mapping: Any) -> list[dict[str, Any]]: ...


FORMATS: dict[str, RowFormat] = {f.name: f for f in (seed.FORMAT, chat.FORMAT, table.FORMAT)}


def names() -> list[str]:
    return list(FORMATS)


def get(name: str) -> RowFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown row format {name!r}; known: {', '.join(FORMATS)}") from None

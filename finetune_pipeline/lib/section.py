"""What every section of the run config is built on: a strict pydantic model, and rules across its fields.

Each package declares the sections it owns in its own `config.py` (data/config.py,
training/config.py, ...) on top of `Section`; `finetune_pipeline.lib.config`
composes them into the whole file. This module sits below every package (it
imports only pydantic), like PROJECT_ROOT in lib/__init__.py.

Strict on purpose: a config value is never coerced, so `batch_size: "8"` or
`epochs: true` is an error naming the field instead of a number that only looks
right (an integer is still fine where a float is expected).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

# `name` in a Rule message is a field of the section that raised it.
_FIELD = re.compile(r"`([A-Za-z_][\w.]*)`")


class Section(BaseModel):
    """One section of the config: unknown keys refused, types strict, assignments validated too."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_is_default(cls, data: Any) -> Any:
        # `eval:` with every line below it commented out is YAML null: the section's defaults.
        return {} if data is None else data


class Rule(ValueError):
    """Rules across fields of one section, broken. Raised from a section's `model_validator(mode="after")`.

    A field is written in backticks (`save_steps`); the config loader writes it
    with its full path (train.save_steps), str() with its bare name, so the same
    class reads right wherever the section sits.
    """

    def __init__(self, *messages: str):
        self.messages = messages
        super().__init__("; ".join(self.render("")))

    def render(self, prefix: str) -> list[str]:
        """The messages with each `field` as prefix + field (prefix "train." or "")."""
        return [_FIELD.sub(lambda m: prefix + m.group(1), message) for message in self.messages]


def rules(*checks: tuple[bool, str]) -> None:
    """Raise one Rule with the message of every check that is False, so all are reported at once."""
    broken = [message for ok, message in checks if not ok]
    if broken:
        raise Rule(*broken)

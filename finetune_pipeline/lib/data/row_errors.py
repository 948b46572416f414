"""How one raw row breaks a rule: the rule's name (counted in the quarantine) and what is wrong."""

from __future__ import annotations

from typing import Any


class RowError(ValueError):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def json_type(value: Any) -> str:
    """A value's type in JSON's words (what a user sees in the file), not Python's."""
    return {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean",
            type(None): "null"}.get(type(value), type(value).__name__)


def described(value: Any) -> str:
    """'null', 'a number', 'an array': a value's JSON type with its article, for messages."""
    t = json_type(value)
    return t if t == "null" else f"{'an' if t[0] in 'aeiou' else 'a'} {t}"


def required_text(data: dict[str, Any], column: str, reason: str) -> str:
    value = data.get(column)
    if value is None:
        raise RowError(reason, f"field {column!r} is missing")
    if not isinstance(value, str):
        raise RowError("bad_content", f"field {column!r} is {described(value)}, not text")
    return value


def with_system(user: str, output: str, system: Any) -> list[dict[str, Any]]:
    """A user turn and the assistant's answer, after the system prompt if there is one."""
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    if system:
        if not isinstance(system, str):
            raise RowError("bad_content", f"system prompt is {described(system)}, not text")
        messages.insert(0, {"role": "system", "content": system})
    return messages

"""Reading a model's (or a dataset's) JSON output: the object it is, and the label one field names.

Used by data (few-shot sampling by class) and by evaluation (metrics, confusion
matrices), so it lives in data, the lower of the two.
"""

from __future__ import annotations

import json


def parse_json_object(text: str) -> dict | None:
    """Return the JSON object in `text`, or None if it is not exactly one.

    No fence stripping or repair: we measure what the model actually emits.
    """
    try:
        value = json.loads(text.strip())
    except (json.JSONDecodeError, TypeError):
        return None
    return value if isinstance(value, dict) else None


def label_of(output: str, field: str) -> str | None:
    """The value of `field` in the JSON object `output`, as text; None if there is none."""
    obj = parse_json_object(output)
    if obj is None or obj.get(field) is None:
        return None
    return str(obj[field])

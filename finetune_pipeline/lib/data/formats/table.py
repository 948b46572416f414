"""`format: table`: a text column and label columns; the labels become the JSON answer.

`text,category` -> user turn `<text>`, answer `{"category": "<category>"}`.
"""

from __future__ import annotations

import json
from typing import Any

from finetune_pipeline.lib.data.row_errors import RowError, required_text, with_system


class TableFormat:
    name = "table"
    help = "a text column and label columns (labels); the answer is the labels as a JSON object"

    def required_columns(self, mapping) -> list[str]:
        return [mapping.text, *mapping.labels]

    def to_messages(self, data: dict[str, Any], mapping) -> list[dict[str, Any]]:
        user = required_text(data, mapping.text, "missing_input")
        labels = {}
        for col in mapping.labels:
            value = data.get(col)
            if value is None or (isinstance(value, str) and not value.strip()):
                raise RowError("missing_label", f"label column {col!r} is empty")
            labels[col] = value
        return with_system(user, json.dumps(labels, ensure_ascii=False), mapping.default_system_prompt)


FORMAT = TableFormat()

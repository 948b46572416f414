"""`format: seed`: columns `system_prompt`, `input`, `output` (names configurable in the mapping)."""

from __future__ import annotations

import json
from typing import Any

from finetune_pipeline.lib.data.row_errors import RowError, required_text, with_system


class SeedFormat:
    name = "seed"
    help = "columns system_prompt (optional), input and output; output is the assistant's answer"

    def required_columns(self, mapping) -> list[str]:
        return [mapping.input, mapping.output]

    def to_messages(self, data: dict[str, Any], mapping) -> list[dict[str, Any]]:
        user = required_text(data, mapping.input, "missing_input")
        output = data.get(mapping.output)
        if output is None or (isinstance(output, str) and not output.strip()):
            raise RowError("missing_output", f"field {mapping.output!r} is missing or empty")
        if not isinstance(output, str):
            # A JSON object stored as an object is still the intended answer.
            output = json.dumps(output, ensure_ascii=False)
        return with_system(user, output, data.get(mapping.system_prompt) or mapping.default_system_prompt)


FORMAT = SeedFormat()

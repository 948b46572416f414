"""`format: chat`: a `messages` column holding an OpenAI-style list of turns."""

from __future__ import annotations

from typing import Any

from finetune_pipeline.lib.data.row_errors import RowError, json_type


class ChatFormat:
    name = "chat"
    help = "a messages column: a list of {role, content} turns ending with the assistant's answer"

    def required_columns(self, mapping) -> list[str]:
        return [mapping.messages]

    def to_messages(self, data: dict[str, Any], mapping) -> list[dict[str, Any]]:
        messages = data.get(mapping.messages)
        if messages is None or messages == []:
            raise RowError("missing_messages", f"no {mapping.messages!r} list")
        if not isinstance(messages, list):
            raise RowError("missing_messages", f"{mapping.messages!r} is a JSON {json_type(messages)}, not a list")
        if mapping.default_system_prompt and not any(
            isinstance(m, dict) and m.get("role") == "system" for m in messages
        ):
            messages = [{"role": "system", "content": mapping.default_system_prompt}, *messages]
        return messages


FORMAT = ChatFormat()

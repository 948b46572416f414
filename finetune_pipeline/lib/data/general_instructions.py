"""General-instruction examples mixed into training (train.general_mix_ratio), the guard against forgetting.

A JSONL file of chat records; a bad row stops training with an error naming
the file, the line and the rule it breaks.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from finetune_pipeline.lib.data.chat_format import ChatIssue, ChatRules, example_issues

# Any keys (a `name`, a `weight`) may ride along; only the turns themselves are checked.
GENERAL_CHAT = ChatRules(roles=frozenset({"system", "user", "assistant"}))
_NOT_TURNS = {"example_not_object", "no_messages", "message_not_object", "missing_key", "unknown_role",
              "content_not_text"}


def read_general_examples(path: Path) -> list[dict[str, Any]]:
    """Chat records from a general-instruction JSONL; a bad row is an error naming file, row and rule."""
    records = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e})") from e
            for issue in example_issues(row, GENERAL_CHAT):
                if (problem := _problem(issue)) is not None:
                    raise ValueError(f"{path}:{n}: {problem}")
            records.append({"messages": row["messages"]})
    return records


def _problem(issue: ChatIssue) -> str | None:
    """What is wrong, in this file's words; None for what a general example may have (empty text, no user turn)."""
    if issue.kind in _NOT_TURNS:
        return "needs a 'messages' list of {role, content} turns (roles system, user, assistant)"
    if issue.kind == "last_turn_not_assistant":
        return "the last turn must be the assistant's answer"
    return None


def general_mix(records: list[dict[str, Any]], n_task: int, ratio: float, seed: int) -> list[dict[str, Any]]:
    """round(ratio * n_task) general examples, drawn without replacement with the run's seed."""
    n = min(round(ratio * n_task), len(records))
    return random.Random(seed).sample(records, n)

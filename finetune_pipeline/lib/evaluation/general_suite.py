"""The general-ability eval suite (forgetting): general prompts with reference answers, read from a chat JSONL.

The file has the format of the general-instruction mix (data/general_instructions.jsonl)
and is read by the same reader, so a bad row is the same one-line error naming
file:line and the rule. On top of that, a suite row must ask something (a user
turn) and give a non-blank reference: an answer scored against nothing would
measure only the chat template.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from finetune_pipeline.lib.data.chat_format import message_issues
from finetune_pipeline.lib.data.general_instructions import GENERAL_CHAT, read_general_examples


@dataclass(frozen=True)
class GeneralPrompt:
    """One suite row: the prompt (every turn before the last assistant turn) and the reference answer."""

    line: int  # the row's line in the file, from 1
    messages: list[dict[str, str]]
    reference: str


def read_general_suite(path: Path) -> list[GeneralPrompt]:
    """Every row of the suite at `path`; a bad row or an empty file is a one-line ValueError naming the file."""
    records = read_general_examples(path)
    # read_general_examples skips blank lines; the same rule gives each record its line.
    with open(path, encoding="utf-8") as f:
        lines = [n for n, text in enumerate(f, 1) if text.strip()]
    prompts = []
    for n, record in zip(lines, records, strict=True):
        messages = record["messages"]
        kinds = {issue.kind for issue in message_issues(messages, GENERAL_CHAT)
                 if issue.message in (None, len(messages) - 1)}
        if "no_user_turn" in kinds:
            raise ValueError(f"{path}:{n}: a suite row needs a user turn (the prompt) before the answer")
        if kinds & {"empty_content", "blank_content"}:
            raise ValueError(f"{path}:{n}: the reference answer (the last assistant turn) is blank")
        prompt = [{"role": m["role"], "content": m["content"]} for m in messages[:-1]]
        prompts.append(GeneralPrompt(line=n, messages=prompt, reference=messages[-1]["content"]))
    if not prompts:
        raise ValueError(f"{path}: the general suite has no rows")
    return prompts

"""The one chat-format validator: one pass over an example's messages, every problem as a structured issue.

Three callers read the issues in their own words: cleaning (the quarantine's
rule names, first problem wins), the OpenAI upload check (the cookbook's rule
names, every problem counted) and the general-instruction reader (an error
naming file and line). Each passes its own `ChatRules` (roles, keys) and maps
the issue kinds it cares about; the checks themselves exist only here.

Written here rather than as a pydantic model of a message: the callers need
each problem by name, in order, with the offending value, and differ in which
problems count; a model's validation errors would have to be mapped back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

IssueKind = Literal[
    # the example (a JSONL line) as a whole
    "example_not_object", "no_messages", "example_unknown_key",
    # one message
    "message_not_object", "missing_key", "unknown_key", "unknown_role", "content_not_text", "empty_content",
    "blank_content",
    # the conversation
    "no_assistant_turn", "no_user_turn", "last_turn_not_assistant",
]


@dataclass(frozen=True)
class ChatRules:
    """What a dialect of the chat format allows."""

    roles: frozenset[str]
    message_keys: frozenset[str] | None = None  # None: any key
    example_keys: frozenset[str] | None = None  # None: any key
    # OpenAI's tool-calling format: a message carrying function_call/tool_calls needs no text content.
    calls_replace_content: bool = False


@dataclass(frozen=True)
class ChatIssue:
    kind: IssueKind
    message: int | None = None  # the message's index (from 0); None for the example or the conversation
    value: Any = None  # what is wrong: the example, the message, sorted unknown keys, the role or the content


def example_issues(example: Any, rules: ChatRules) -> list[ChatIssue]:
    """Issues of one parsed JSONL line {"messages": [...], ...}; an unusable shape stops the check there."""
    if not isinstance(example, dict):
        return [ChatIssue("example_not_object", value=example)]
    messages = example.get("messages")
    if not messages or not isinstance(messages, list):
        return [ChatIssue("no_messages", value=messages)]
    issues = []
    if rules.example_keys is not None and (unknown := sorted(set(example) - rules.example_keys)):
        issues.append(ChatIssue("example_unknown_key", value=unknown))
    return issues + message_issues(messages, rules)


def message_issues(messages: list[Any], rules: ChatRules) -> list[ChatIssue]:
    """Issues of a list of messages, message by message (in the order of the checks), then the conversation's."""
    issues: list[ChatIssue] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            issues.append(ChatIssue("message_not_object", i, m))
            continue
        if "role" not in m or "content" not in m:
            issues.append(ChatIssue("missing_key", i, sorted({"role", "content"} - set(m))))
        if rules.message_keys is not None and (unknown := sorted(set(m) - rules.message_keys)):
            issues.append(ChatIssue("unknown_key", i, unknown))
        if m.get("role") not in rules.roles:
            issues.append(ChatIssue("unknown_role", i, m.get("role")))
        if rules.calls_replace_content and (m.get("function_call") or m.get("tool_calls")):
            continue
        content = m.get("content")
        if not isinstance(content, str):
            issues.append(ChatIssue("content_not_text", i, content))
        elif not content:
            issues.append(ChatIssue("empty_content", i, content))
        elif not content.strip():
            issues.append(ChatIssue("blank_content", i, content))
    roles = [m.get("role") for m in messages if isinstance(m, dict)]
    if "assistant" not in roles:
        issues.append(ChatIssue("no_assistant_turn"))
    if "user" not in roles:
        issues.append(ChatIssue("no_user_turn"))
    if not messages or not isinstance(messages[-1], dict) or messages[-1].get("role") != "assistant":
        issues.append(ChatIssue("last_turn_not_assistant"))
    return issues

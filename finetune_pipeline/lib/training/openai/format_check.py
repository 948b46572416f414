"""Check chat fine-tuning JSONL the way OpenAI's own format checker does, before any upload.

The rules and their names follow the checker in OpenAI's cookbook ("Data
preparation and analysis for chat model fine-tuning"): `data_type`,
`missing_messages_list`, `message_missing_key`, `message_unrecognized_key`,
`unrecognized_role`, `missing_content`, `example_missing_assistant_message`,
counted per type. Added here: `invalid_json` (the cookbook would crash),
`example_unrecognized_key` (OpenAI rejects unknown top-level keys),
`too_many_tokens` (per example, a configurable limit) and `too_few_examples`.
Every issue names the file, the line and the rule.

Tokens are counted with tiktoken using the cookbook's chat formula (3 tokens per
message, 1 per name, 3 to prime the reply). tiktoken downloads its BPE files on
first use, which a machine without internet cannot; the `bpe-openai` package
ships the same files, so they are loaded from there after checking their
sha256 against the hash tiktoken itself expects. Without either package the
count is an estimate (ceil(UTF-8 bytes / 4), OpenAI's rule of thumb for
English), and the report says so.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from unittest import mock

from finetune_pipeline.lib.data import chat_format

# What OpenAI's chat fine-tuning format accepts (the cookbook's sets plus the tool-calling keys).
EXAMPLE_KEYS = {"messages", "tools", "functions", "parallel_tool_calls"}
MESSAGE_KEYS = {"role", "content", "name", "function_call", "tool_calls", "tool_call_id", "weight"}
ROLES = {"system", "user", "assistant", "function", "tool"}
OPENAI_CHAT = chat_format.ChatRules(roles=frozenset(ROLES), message_keys=frozenset(MESSAGE_KEYS),
                                    example_keys=frozenset(EXAMPLE_KEYS), calls_replace_content=True)

# The cookbook's default-epoch heuristic, used to estimate the cost of n_epochs="auto".
TARGET_EPOCHS, MIN_TARGET_EXAMPLES, MAX_TARGET_EXAMPLES = 3, 100, 25_000
MIN_DEFAULT_EPOCHS, MAX_DEFAULT_EPOCHS = 1, 25


class FormatError(ValueError):
    """The dataset breaks OpenAI's rules; the message lists counts by rule and each offending line."""

    def __init__(self, report: "ValidationReport"):
        self.report = report
        super().__init__(report.describe())


@dataclass
class Issue:
    file: str
    line: int
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.file} line {self.line}: {self.rule}: {self.message}"


@dataclass
class FileReport:
    path: str
    examples: int = 0
    issues: list[Issue] = field(default_factory=list)
    token_counts: list[int] = field(default_factory=list)

    def error_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(i.rule for i in self.issues).items()))

    def summary(self) -> dict[str, Any]:
        t = self.token_counts
        return {"examples": self.examples, "errors": self.error_counts(), "total_tokens": sum(t),
                "max_tokens": max(t, default=0), "mean_tokens": round(sum(t) / len(t), 1) if t else 0.0}


@dataclass
class ValidationReport:
    files: list[FileReport]
    token_limit: int
    tokenizer: str  # how tokens were counted: "tiktoken o200k_base" or "estimate: ..."

    @property
    def ok(self) -> bool:
        return not any(f.issues for f in self.files)

    def issues(self) -> list[Issue]:
        return [i for f in self.files for i in f.issues]

    def error_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(i.rule for i in self.issues()).items()))

    def billing_tokens(self, n_epochs: int | str) -> int:
        """Tokens OpenAI would bill for the training file: each example capped at the limit, x epochs."""
        train = self.files[0]
        per_epoch = sum(min(self.token_limit, n) for n in train.token_counts)
        return per_epoch * expected_epochs(train.examples, n_epochs)

    def describe(self, per_rule: int = 5) -> str:
        """A summary, then the first few offending lines of every rule broken (all are in to_json)."""
        issues = self.issues()
        if not issues:
            return "OpenAI format check passed: " + ", ".join(
                f"{Path(f.path).name}: {f.examples} examples" for f in self.files)
        lines = [f"OpenAI format check failed with {len(issues)} error(s) by rule {self.error_counts()}:"]
        for rule, count in self.error_counts().items():
            lines += [f"  {i}" for i in issues if i.rule == rule][:per_rule]
            if count > per_rule:
                lines.append(f"  ... and {count - per_rule} more {rule}")
        return "\n".join(lines)

    def raise_for_errors(self) -> "ValidationReport":
        if not self.ok:
            raise FormatError(self)
        return self

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "token_limit": self.token_limit, "tokenizer": self.tokenizer,
                "errors": self.error_counts(), "files": {f.path: f.summary() for f in self.files},
                "issues": [i.__dict__ for i in self.issues()]}


def expected_epochs(n_examples: int, n_epochs: int | str) -> int:
    """The epochs a job will run: the configured number, or the cookbook's estimate of OpenAI's "auto"."""
    if n_epochs != "auto":
        return int(n_epochs)
    if n_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, math.ceil(MIN_TARGET_EXAMPLES / max(n_examples, 1)))
    if n_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n_examples)
    return TARGET_EPOCHS


def example_issues(example: Any) -> list[tuple[str, str]]:
    """(rule, message) for each way one parsed line breaks the format; the cookbook's checks."""
    issues = chat_format.example_issues(example, OPENAI_CHAT)
    messages = example.get("messages") if isinstance(example, dict) else None
    return [problem for issue in issues if (problem := _cookbook_rule(issue, messages)) is not None]


def _cookbook_rule(issue: chat_format.ChatIssue, messages: Any) -> tuple[str, str] | None:
    """An issue in the cookbook's words; None for what OpenAI accepts (blank text, no user turn)."""
    n, value = None if issue.message is None else issue.message + 1, issue.value
    match issue.kind:
        case "example_not_object":
            return "data_type", f"each line must be a JSON object, got {type(value).__name__}"
        case "no_messages":
            return "missing_messages_list", "no non-empty 'messages' list"
        case "example_unknown_key":
            return "example_unrecognized_key", f"unrecognized key(s) {value}; allowed: {sorted(EXAMPLE_KEYS)}"
        case "message_not_object":
            return "data_type", f"message {n} must be a JSON object, got {type(value).__name__}"
        case "missing_key":
            return "message_missing_key", f"message {n} lacks 'role' or 'content'"
        case "unknown_key":
            return "message_unrecognized_key", f"message {n} has unrecognized key(s) {value}"
        case "unknown_role":
            return "unrecognized_role", f"message {n} has role {value!r}; allowed: {sorted(ROLES)}"
        case "content_not_text" | "empty_content":
            return "missing_content", f"message {n} ({messages[n - 1].get('role')}) has no text content"
        case "no_assistant_turn":
            return "example_missing_assistant_message", "no message with role 'assistant' to learn from"
    return None


def count_chat_tokens(messages: list[dict[str, Any]], count: Callable[[str], int]) -> int:
    """The cookbook's num_tokens_from_messages: per-message framing plus every string value."""
    tokens = 3  # every reply is primed with <|start|>assistant<|message|>
    for message in messages:
        tokens += 3
        for key, value in message.items():
            if isinstance(value, str):
                tokens += count(value)
            elif value is not None and key != "weight":
                tokens += count(json.dumps(value))
            if key == "name":
                tokens += 1
    return tokens


def validate_file(path: Path, count: Callable[[str], int], token_limit: int) -> FileReport:
    report = FileReport(str(path))
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            report.examples += 1
            try:
                example = json.loads(line)
            except json.JSONDecodeError as e:
                report.issues.append(Issue(str(path), line_no, "invalid_json", f"not valid JSON ({e.msg})"))
                continue
            problems = example_issues(example)
            report.issues += [Issue(str(path), line_no, rule, msg) for rule, msg in problems]
            if problems:
                continue
            n = count_chat_tokens(example["messages"], count)
            report.token_counts.append(n)
            if n > token_limit:
                report.issues.append(Issue(str(path), line_no, "too_many_tokens",
                                           f"{n} tokens, more than the limit of {token_limit}"))
    return report


def validate_dataset(train: Path, val: Path | None, *, model: str, token_limit: int,
                     min_examples: int) -> ValidationReport:
    """Check train (and val, if it has rows); nothing here sends a request."""
    count, tokenizer = token_counter(model)
    files = [validate_file(train, count, token_limit)]
    if files[0].examples < min_examples:
        files[0].issues.append(Issue(str(train), files[0].examples, "too_few_examples",
                                     f"{files[0].examples} example(s); OpenAI fine-tuning needs at least {min_examples}"))
    if val is not None and val.is_file() and val.stat().st_size > 0:
        files.append(validate_file(val, count, token_limit))
    return ValidationReport(files, token_limit, tokenizer)


# --- token counting -------------------------------------------------------------------------

def encoding_name(model: str) -> str:
    """tiktoken's encoding for a model name; gpt-4o and newer use o200k_base."""
    try:
        import tiktoken

        return tiktoken.encoding_name_for_model(model)
    except (ImportError, KeyError):
        return "o200k_base"


def token_counter(model: str) -> tuple[Callable[[str], int], str]:
    """(count(text) -> tokens, description of the method)."""
    name = encoding_name(model)
    try:
        encoding = _tiktoken_encoding(name)
    except (ImportError, FileNotFoundError, KeyError) as e:
        return estimate_tokens, f"estimate: ceil(utf-8 bytes / 4) (tiktoken {name} unavailable: {e})"
    return (lambda text: len(encoding.encode(text, disallowed_special=()))), f"tiktoken {name}"


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text.encode("utf-8")) / 4)


@functools.lru_cache(maxsize=4)
def _tiktoken_encoding(name: str):
    """tiktoken's own encoding, with its BPE ranks read from bpe-openai's bundled copy.

    tiktoken's constructor supplies the pattern and special tokens; only its
    download is replaced, and the bundled bytes must match tiktoken's expected sha256.
    """
    import importlib.resources

    import tiktoken
    from tiktoken_ext import openai_public

    bundled = importlib.resources.files("bpe_openai.data").joinpath(f"{name}.tiktoken.gz")
    if not bundled.is_file():
        raise FileNotFoundError(f"bpe-openai ships no {name}.tiktoken")
    data = gzip.decompress(bundled.read_bytes())

    def load_verified(_url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        if expected_hash and hashlib.sha256(data).hexdigest() != expected_hash:
            raise ValueError(f"bundled {name}.tiktoken does not match tiktoken's sha256 {expected_hash}")
        return {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in data.splitlines() if line)}

    with mock.patch.object(openai_public, "load_tiktoken_bpe", load_verified):
        return tiktoken.Encoding(**openai_public.ENCODING_CONSTRUCTORS[name]())

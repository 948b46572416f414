"""Chat records -> token ids with loss on assistant tokens only.

The prompt is rendered by the tokenizer's own chat template, so training sees
exactly what inference will send. Each assistant turn's span is found by
rendering the conversation up to that turn with and without it; everything
outside those spans gets label -100 (no loss on system prompt, user text or
template scaffolding). Padding happens per batch in the collator, never to a
fixed max_length.
"""

from __future__ import annotations

from typing import Any

IGNORE_INDEX = -100


def _render_ids(tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    # The template already contains the special tokens it wants.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def tokenize_chat(tokenizer, messages: list[dict[str, str]]) -> dict[str, list[int]]:
    full = _render_ids(tokenizer, messages, add_generation_prompt=False)
    labels = [IGNORE_INDEX] * len(full)
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start = len(_render_ids(tokenizer, messages[:i], add_generation_prompt=True))
        end = len(_render_ids(tokenizer, messages[: i + 1], add_generation_prompt=False))
        labels[start:end] = full[start:end]
    if all(x == IGNORE_INDEX for x in labels):
        raise ValueError("no assistant tokens to learn from after applying the chat template")
    return {"input_ids": full, "attention_mask": [1] * len(full), "labels": labels}


def count_tokens(tokenizer, messages: list[dict[str, str]]) -> int:
    return len(_render_ids(tokenizer, messages, add_generation_prompt=False))


def make_collator(tokenizer):
    """Dynamic padding to the longest row of each batch, labels padded with -100."""
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=IGNORE_INDEX)


def tokenize_records(tokenizer, records: list[dict[str, Any]]) -> list[dict[str, list[int]]]:
    return [tokenize_chat(tokenizer, r["messages"]) for r in records]

"""Greedy batched generation from chat conversations."""

from __future__ import annotations

from collections.abc import Callable, Sequence


def strip_assistant(messages: Sequence[dict]) -> list[dict]:
    """Messages up to, not including, the last assistant message.

    Lets callers pass full training records (prompt + reference answer).
    """
    msgs = list(messages)
    for i in range(len(msgs) - 1, -1, -1):
        if msgs[i].get("role") == "assistant":
            return msgs[:i]
    return msgs


def generate_batched(
    model,
    tokenizer,
    conversations: Sequence[Sequence[dict]],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 16,
    token_ids: list | None = None,
    allowed_tokens: Callable[[list[int]], list[int]] | None = None,
    eos_token_id: int | None = None,
) -> list[str]:
    """Greedy completions for each conversation, in the input order.

    If `token_ids` is a list, it receives each completion's generated token ids
    (pads removed), in the same order: constrained evaluation reuses them.
    `allowed_tokens(generated ids so far)` restricts each step to the ids it
    returns (transformers' prefix_allowed_tokens_fn; see constrained.py).
    """
    import torch  # here, not at import: the CLI's quick commands import the stages, not a model

    prompts = [
        tokenizer.apply_chat_template(
            _prompt_messages(c), add_generation_prompt=True, tokenize=False
        )
        for c in conversations
    ]
    pad_token = tokenizer.pad_token if tokenizer.pad_token is not None else tokenizer.eos_token
    pad_id = tokenizer.convert_tokens_to_ids(pad_token)
    # Sort by length so each batch holds similar lengths (less padding).
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])

    outputs: list[str] = [""] * len(prompts)
    ids_out: list[list[int]] = [[] for _ in prompts]
    old_side, old_pad = tokenizer.padding_side, tokenizer.pad_token
    # Left padding keeps every prompt's last token adjacent to its generated tokens.
    tokenizer.padding_side = "left"
    tokenizer.pad_token = pad_token
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                enc = tokenizer(
                    [prompts[i] for i in idx],
                    return_tensors="pt",
                    padding=True,
                    add_special_tokens=False,  # the chat template already has them
                ).to(model.device)
                prompt_len = enc["input_ids"].shape[1]
                constraint = {}
                if allowed_tokens is not None:
                    constraint["prefix_allowed_tokens_fn"] = lambda _, ids: allowed_tokens(ids[prompt_len:].tolist())
                if eos_token_id is not None:
                    constraint["eos_token_id"] = eos_token_id
                out = model.generate(
                    **enc,
                    do_sample=False,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=pad_id,
                    **constraint,
                )
                new_tokens = out[:, prompt_len:]
                texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
                for i, text, row in zip(idx, texts, new_tokens.tolist()):
                    outputs[i] = text.strip()
                    ids_out[i] = _until_stop(row, model.generation_config.eos_token_id, pad_id)
    finally:
        tokenizer.padding_side = old_side
        tokenizer.pad_token = old_pad
        model.train(was_training)
    if token_ids is not None:
        token_ids[:] = ids_out
    return outputs


def _until_stop(row: list[int], eos, pad_id: int) -> list[int]:
    """Generated ids up to and including the first end-of-sequence token; pads after it dropped."""
    stops = set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [pad_id])
    for j, t in enumerate(row):
        if t in stops:
            return row[: j + 1]
    return row


def _prompt_messages(conversation: Sequence[dict]) -> list[dict]:
    """Drop the final turn only if it is the assistant's answer."""
    msgs = list(conversation)
    if msgs and msgs[-1].get("role") == "assistant":
        return strip_assistant(msgs)
    return msgs

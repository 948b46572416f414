"""Teacher-forced scoring: how likely a model finds a given answer to a conversation.

The answer's tokens are exactly those training puts under the loss for an
assistant turn with that content (collate.tokenize_chat): the conversation plus
the answer rendered by the tokenizer's chat template, from the end of the
generation prompt to the end, end-of-turn token(s) included. So the NLL here is
the same quantity as the training loss on that turn, and a version's score is
comparable to its base model's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from finetune_pipeline.lib.training.collate import _render_ids


@dataclass(frozen=True)
class AnswerNLL:
    """One answer's summed negative log-likelihood (natural log) over its `tokens` tokens."""

    tokens: int
    nll: float

    @property
    def mean(self) -> float:
        return self.nll / self.tokens


def answer_span(tokenizer, conversation: Sequence[dict], answer: str) -> tuple[list[int], int]:
    """The ids of `conversation` + the assistant turn `answer`, and where the answer's span starts."""
    start = len(_render_ids(tokenizer, list(conversation), add_generation_prompt=True))
    ids = _render_ids(tokenizer, [*conversation, {"role": "assistant", "content": answer}],
                      add_generation_prompt=False)
    return ids, start


def answer_nll(model, tokenizer, conversations: Sequence[Sequence[dict]], answers: Sequence[str], *,
               batch_size: int = 8) -> list[AnswerNLL]:
    """Each answer's NLL under `model` given its conversation, in the input order."""
    import torch  # here, not at import: the CLI's quick commands import lib modules without torch

    if len(conversations) != len(answers):
        raise ValueError(f"{len(conversations)} conversations but {len(answers)} answers")
    rows = [answer_span(tokenizer, c, a) for c, a in zip(conversations, answers)]
    for i, (ids, start) in enumerate(rows):
        if len(ids) <= start:
            raise ValueError(f"row {i}: the answer has no tokens after the chat template's generation prompt")
        if start == 0:  # nothing before the answer to predict its first token from
            raise ValueError(f"row {i}: the chat template renders an empty prompt")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    # Longest first: similar lengths share a batch (less padding), and running out of memory happens at once.
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
    results: list[AnswerNLL | None] = [None] * len(rows)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for b in range(0, len(order), batch_size):
                idx = order[b: b + batch_size]
                width = max(len(rows[i][0]) for i in idx)
                # Right padding: each row's real tokens keep positions 0..n-1 and never see a pad (causal).
                input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for r, i in enumerate(idx):
                    ids = rows[i][0]
                    input_ids[r, : len(ids)] = torch.tensor(ids)
                    mask[r, : len(ids)] = 1
                logits = model(input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device)).logits
                for r, i in enumerate(idx):
                    ids, start = rows[i]
                    # The logit at position t predicts token t + 1.
                    span_logits = logits[r, start - 1: len(ids) - 1].float()
                    targets = torch.tensor(ids[start:], device=span_logits.device)
                    logp = torch.log_softmax(span_logits, dim=-1).gather(1, targets[:, None])
                    results[i] = AnswerNLL(tokens=len(targets), nll=float(-logp.sum()))
    finally:
        model.train(was_training)
    return results  # type: ignore[return-value]  # every index was filled


def mean_nll(rows: Sequence[AnswerNLL]) -> float:
    """The token-weighted mean NLL: every token counts once, whichever answer it is in."""
    tokens = sum(r.tokens for r in rows)
    if tokens == 0:
        raise ValueError("no answer tokens to average over")
    return sum(r.nll for r in rows) / tokens

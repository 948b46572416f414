"""Generation restricted to a fixed set of outputs (e.g. a classifier's label set).

A prefix trie over the token ids of every allowed output (tokenized exactly as
training tokenized the assistant turn, end-of-turn token included) becomes
transformers' `prefix_allowed_tokens_fn`: at each step only tokens that continue
some allowed output may be chosen, so greedy decoding always ends in one of them.
It is greedy over the trie, not a full argmax of every label's likelihood. The
decoding itself is label_decode.py's, which makes the same choices as that
`prefix_allowed_tokens_fn` in `generate` (kept in generate.py as the reference
the tests compare with) in a few forward steps instead of one per token.
"""

from __future__ import annotations

from collections.abc import Sequence

from finetune_pipeline.lib.evaluation.generate import _prompt_messages
from finetune_pipeline.lib.evaluation.label_decode import decode_labels
from finetune_pipeline.lib.training.collate import _render_ids


def output_token_ids(tokenizer, output: str, eos_id: int) -> list[int]:
    """The ids training puts under the loss for an assistant answer `output`, up to and including eos."""
    prompt = [{"role": "user", "content": "x"}]
    start = len(_render_ids(tokenizer, prompt, add_generation_prompt=True))
    ids = _render_ids(tokenizer, [*prompt, {"role": "assistant", "content": output}], add_generation_prompt=False)[start:]
    if eos_id in ids:
        return ids[: ids.index(eos_id) + 1]
    return [*ids, eos_id]


class OutputTrie:
    def __init__(self, sequences: Sequence[Sequence[int]], eos_id: int):
        self.eos_id = eos_id
        self.next: dict[tuple[int, ...], set[int]] = {}
        for seq in sequences:
            for i in range(len(seq)):
                self.next.setdefault(tuple(seq[:i]), set()).add(seq[i])
        self.max_len = max(len(s) for s in sequences)

    def accepts(self, ids: Sequence[int]) -> bool:
        """True if `ids` spell one allowed output, end-of-sequence included."""
        return bool(ids) and ids[-1] == self.eos_id and all(
            ids[j] in self.next.get(tuple(ids[:j]), ()) for j in range(len(ids)))

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        # A finished (or impossible) prefix may only repeat eos; generate pads it anyway.
        return sorted(self.next.get(tuple(prefix), {self.eos_id}))


def eos_token_id(model, tokenizer) -> int:
    eos = model.generation_config.eos_token_id
    if isinstance(eos, (list, tuple)):
        eos = eos[0] if eos else None
    return eos if eos is not None else tokenizer.eos_token_id


def generate_constrained(model, tokenizer, conversations: Sequence[Sequence[dict]], allowed_outputs: Sequence[str],
                         batch_size: int = 16, free_token_ids: Sequence[Sequence[int]] | None = None,
                         stats: dict | None = None) -> list[str]:
    """Greedy completions, each one of `allowed_outputs`, in the input order.

    `free_token_ids`: the same model's unconstrained greedy ids for the same
    conversations. Where they already spell an allowed output, every token they
    chose was the argmax over the whole vocabulary and allowed by the trie, so
    it is also the argmax over the allowed tokens: constrained greedy decoding
    would choose the same sequence, and it is reused instead of decoded again.
    `stats` (if given) receives how many were reused and decoded.
    """
    eos = eos_token_id(model, tokenizer)
    sequences = [output_token_ids(tokenizer, o, eos) for o in allowed_outputs]
    trie = OutputTrie(sequences, eos)
    outputs = [""] * len(conversations)
    todo = []
    for i in range(len(conversations)):
        if free_token_ids is not None and trie.accepts(list(free_token_ids[i])):
            outputs[i] = tokenizer.decode(free_token_ids[i], skip_special_tokens=True).strip()
        else:
            todo.append(i)
    if stats is not None:
        stats.update(reused=len(conversations) - len(todo), decoded=len(todo))
    prompts = [_render_ids(tokenizer, _prompt_messages(conversations[i]), add_generation_prompt=True) for i in todo]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    chosen = decode_labels(model, prompts, sequences, batch_size=batch_size, pad_id=pad)
    for i, index in zip(todo, chosen):
        outputs[i] = allowed_outputs[index]
    return outputs

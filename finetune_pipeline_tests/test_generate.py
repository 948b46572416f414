
from finetune_pipeline.lib.evaluation.generate import generate_batched, strip_assistant

# `tiny_lm` (a seeded random Llama with SmolLM2's tokenizer) comes from conftest.py.


def _conv(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


PROMPTS = [
    _conv("Hi"),
    _conv("Extract the name and age from: Ada Lovelace was 36 years old when she died."),
    _conv("Short one."),
    _conv(" ".join(["Please return a JSON object describing this very long sentence."] * 4)),
]


def test_strip_assistant():
    record = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a"},
    ]
    assert strip_assistant(record) == record[:2]
    assert strip_assistant(record[:2]) == record[:2]
    # Only the last assistant message and what follows it are dropped.
    multi = record + [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]
    assert strip_assistant(multi) == multi[:4]


def test_batched_equals_one_by_one(tiny_lm):
    model, tok = tiny_lm
    batched = generate_batched(model, tok, PROMPTS, max_new_tokens=8, batch_size=4)
    single = [generate_batched(model, tok, [p], max_new_tokens=8)[0] for p in PROMPTS]
    assert batched == single
    # Distinct outputs, so equality above (and the order test) proves something.
    assert len(set(single)) == len(PROMPTS)


def test_order_preserved_across_batches(tiny_lm):
    model, tok = tiny_lm
    forward = generate_batched(model, tok, PROMPTS, max_new_tokens=8, batch_size=2)
    backward = generate_batched(model, tok, PROMPTS[::-1], max_new_tokens=8, batch_size=2)
    assert backward == forward[::-1]


def test_max_new_tokens_bounds_output(tiny_lm, monkeypatch):
    model, tok = tiny_lm
    # Spy on generate: re-tokenizing decoded text does not round-trip exactly,
    # so count the generated token ids instead.
    new_token_counts = []
    real_generate = model.generate

    def spy(**kwargs):
        out = real_generate(**kwargs)
        new_token_counts.append(out.shape[1] - kwargs["input_ids"].shape[1])
        return out

    monkeypatch.setattr(model, "generate", spy)
    short = generate_batched(model, tok, PROMPTS, max_new_tokens=2)
    assert new_token_counts and max(new_token_counts) <= 2
    longer = generate_batched(model, tok, PROMPTS, max_new_tokens=6)
    # Greedy decoding: more budget only extends the same completion.
    for a, b in zip(short, longer):
        assert b.startswith(a)
    assert any(len(b) > len(a) for a, b in zip(short, longer))


def test_final_assistant_turn_is_not_in_prompt(tiny_lm):
    model, tok = tiny_lm
    records = [p + [{"role": "assistant", "content": '{"answer": 42}'}] for p in PROMPTS[:2]]
    with_answer = generate_batched(model, tok, records, max_new_tokens=8)
    without = generate_batched(model, tok, PROMPTS[:2], max_new_tokens=8)
    assert with_answer == without


def test_tokenizer_state_restored(tiny_lm):
    model, tok = tiny_lm
    side, pad = tok.padding_side, tok.pad_token
    tok.padding_side = "right"
    try:
        generate_batched(model, tok, PROMPTS[:2], max_new_tokens=2)
        assert tok.padding_side == "right"
        assert tok.pad_token == pad
    finally:
        tok.padding_side = side

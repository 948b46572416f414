"""The general-ability suite (forgetting): the shipped data, its reader and teacher-forced answer scoring."""

from __future__ import annotations

import json
import re

import pytest
import torch

from finetune_pipeline.lib import PROJECT_ROOT
from finetune_pipeline.lib.data.general_instructions import read_general_examples
from finetune_pipeline.lib.evaluation.answer_nll import AnswerNLL, answer_nll, mean_nll
from finetune_pipeline.lib.evaluation.general_suite import read_general_suite
from finetune_pipeline.lib.evaluation.generate import generate_batched
from finetune_pipeline.lib.models.base_models import load_for_inference, load_tokenizer, resolve_base_model
from finetune_pipeline.lib.training.collate import IGNORE_INDEX, count_tokens, tokenize_chat
from finetune_pipeline_tests.helpers import MODEL_CACHE, write_jsonl

SUITE = PROJECT_ROOT / "data" / "general_eval.jsonl"
GENERAL_MIX = PROJECT_ROOT / "data" / "general_instructions.jsonl"

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
# Different lengths (so batches pad), with and without a system turn, one with an earlier exchange (k-shot-like).
CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [SYSTEM, {"role": "user", "content": "Name a colour of the rainbow and say why the sky looks blue at noon."}],
    [{"role": "user", "content": "2 + 2?"}, {"role": "assistant", "content": "4"},
     {"role": "user", "content": "And 3 + 3?"}],
    [SYSTEM, {"role": "user", "content": "Write a haiku about rivers."}],
    [{"role": "user", "content": "Spell 'cat' backwards."}],
]
ANSWERS = ["Hello!", "Red. Air scatters blue light most.", "6", "Water runs to the sea,\nstones remember", "tac"]


def _span(tokenizer, conversation, answer) -> list[int]:
    """The ids tokenize_chat puts under the loss for the final assistant turn (the test's independent reference)."""
    enc = tokenize_chat(tokenizer, [*conversation, {"role": "assistant", "content": answer}])
    # Earlier assistant turns are labelled too; the last turn's labels lie past the rendered conversation.
    before = count_tokens(tokenizer, list(conversation))
    return [i for i, label in enumerate(enc["labels"]) if label != IGNORE_INDEX and i >= before]


def _hand_nll(model, tokenizer, conversation, answer) -> tuple[int, float]:
    """One unbatched forward over conversation + answer, log_softmax, gather over the training span."""
    enc = tokenize_chat(tokenizer, [*conversation, {"role": "assistant", "content": answer}])
    positions = _span(tokenizer, conversation, answer)
    ids = torch.tensor([enc["input_ids"]])
    with torch.inference_mode():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    return len(positions), -sum(float(logp[p - 1, enc["input_ids"][p]]) for p in positions)


def test_answer_nll_matches_a_hand_computation_and_does_not_depend_on_batching(tiny_lm):
    model, tokenizer = tiny_lm
    batched = answer_nll(model, tokenizer, CONVERSATIONS, ANSWERS, batch_size=8)
    single = answer_nll(model, tokenizer, CONVERSATIONS, ANSWERS, batch_size=1)
    for conversation, answer, row, alone in zip(CONVERSATIONS, ANSWERS, batched, single):
        tokens, nll = _hand_nll(model, tokenizer, conversation, answer)
        assert row.tokens == alone.tokens == tokens
        assert row.nll == pytest.approx(nll, abs=1e-4) and alone.nll == pytest.approx(nll, abs=1e-4)
        assert row.mean == pytest.approx(nll / tokens, abs=1e-4)
    # A random model gives each answer a different score: the comparison above is not between constants.
    assert len({round(r.mean, 3) for r in batched}) > 1


def test_token_count_is_the_span_training_puts_under_the_loss(tokenizer, tiny_lm):
    model, _ = tiny_lm
    rows = answer_nll(model, tokenizer, CONVERSATIONS, ANSWERS)
    for conversation, answer, row in zip(CONVERSATIONS, ANSWERS, rows):
        full = tokenize_chat(tokenizer, [*conversation, {"role": "assistant", "content": answer}])
        last_span = _span(tokenizer, conversation, answer)
        assert row.tokens == len(last_span)
        # The span runs to the end of the rendering: the end-of-turn token is scored, as in training.
        assert last_span[-1] == len(full["input_ids"]) - 1
        assert tokenizer.convert_tokens_to_ids("<|im_end|>") in [full["input_ids"][p] for p in last_span]


def test_the_model_mode_is_restored(tiny_lm):
    model, tokenizer = tiny_lm
    model.train()
    try:
        answer_nll(model, tokenizer, CONVERSATIONS[:1], ANSWERS[:1])
        assert model.training
    finally:
        model.eval()
    answer_nll(model, tokenizer, CONVERSATIONS[:1], ANSWERS[:1])
    assert not model.training


class _DropsMarkedAnswers:
    """The real tokenizer, except that its chat template renders an assistant turn "DROP" as nothing."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self.pad_token_id = tokenizer.pad_token_id

    def apply_chat_template(self, messages, **kwargs):
        kept = [m for m in messages if m["content"] != "DROP"]
        return self._tokenizer.apply_chat_template(kept, **kwargs)

    def __call__(self, *args, **kwargs):
        return self._tokenizer(*args, **kwargs)


def test_an_answer_with_no_tokens_is_an_error_naming_its_row(tiny_lm):
    model, tokenizer = tiny_lm
    with pytest.raises(ValueError, match=r"^row 2: "):
        answer_nll(model, _DropsMarkedAnswers(tokenizer), CONVERSATIONS[:3], ["ok", "fine", "DROP"])


def test_mean_nll_weights_every_token_once():
    rows = [AnswerNLL(tokens=1, nll=3.0), AnswerNLL(tokens=3, nll=3.0)]
    assert mean_nll(rows) == pytest.approx(sum(r.nll for r in rows) / sum(r.tokens for r in rows))
    assert mean_nll(rows) != pytest.approx(sum(r.mean for r in rows) / len(rows))
    with pytest.raises(ValueError):
        mean_nll([])


# --- the shipped suite --------------------------------------------------------------------------------------


def _normalise(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def _jaccard(a: str, b: str) -> float:
    x, y = set(_normalise(a).split()), set(_normalise(b).split())
    return len(x & y) / len(x | y)


def _user_prompts(messages_list) -> list[str]:
    return ["\n".join(m["content"] for m in messages if m["role"] == "user") for messages in messages_list]


def test_the_shipped_suite_parses_and_is_held_out_from_the_general_mix():
    suite = read_general_suite(SUITE)
    assert len(suite) >= 50
    assert [p.line for p in suite] == list(range(1, len(suite) + 1))
    assert all(p.messages[-1]["role"] == "user" and p.reference.strip() for p in suite)
    prompts = _user_prompts(p.messages for p in suite)
    assert len({_normalise(p) for p in prompts}) == len(prompts)  # no prompt asked twice

    trained = _user_prompts(r["messages"] for r in read_general_examples(GENERAL_MIX))
    assert len(trained) > 100
    assert not {_normalise(p) for p in prompts} & {_normalise(t) for t in trained}
    close = [(p, t, round(_jaccard(p, t), 2)) for p in prompts for t in trained if _jaccard(p, t) >= 0.6]
    assert not close


def test_the_overlap_check_catches_a_close_paraphrase():
    # The rule above must be able to fail: a reworded prompt from the general mix is caught.
    assert _jaccard("What is the capital of Japan?", "what's the capital of Japan") >= 0.6
    assert _normalise("What is the capital of France?") == _normalise("what is the capital of france")


@pytest.mark.parametrize("line, problem", [
    ("{not json", "not valid JSON"),
    (json.dumps({"messages": [{"role": "user", "content": "Hi"}]}), "last turn must be the assistant"),
    (json.dumps({"messages": [{"role": "assistant", "content": "Hello"}]}), "needs a user turn"),
    (json.dumps({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "  "}]}),
     "reference answer"),
    (json.dumps({"messages": [{"role": "robot", "content": "Hi"}, {"role": "assistant", "content": "x"}]}),
     "roles system, user, assistant"),
])
def test_a_bad_suite_row_is_a_one_line_error_naming_file_and_line(tmp_path, line, problem):
    good = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}
    path = tmp_path / "suite.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + line + "\n", encoding="utf-8")  # the blank line 2 still counts
    with pytest.raises(ValueError) as error:
        read_general_suite(path)
    message = str(error.value)
    assert message.startswith(f"{path}:3: ") and problem in message and "\n" not in message


def test_an_empty_suite_is_a_one_line_error_naming_the_file(tmp_path):
    path = write_jsonl(tmp_path / "empty.jsonl", [])
    with pytest.raises(ValueError, match="has no rows") as error:
        read_general_suite(path)
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)


# --- the real model -----------------------------------------------------------------------------------------


@pytest.mark.smollm2
@pytest.mark.slow  # 5 s on 2 idle CPU cores, 17 s on busy ones (load, generate, score)
def test_smollm2_finds_its_own_answers_likelier_than_mismatched_references():
    model_dir = resolve_base_model("embedded:smollm2-135m-instruct", MODEL_CACHE).path
    model, tokenizer = load_for_inference(model_dir, "float32"), load_tokenizer(model_dir)
    suite = read_general_suite(SUITE)[:5]
    prompts = [p.messages for p in suite]
    own = generate_batched(model, tokenizer, prompts, max_new_tokens=40)
    # Each reference under the next row's prompt: fluent text that does not answer the question.
    mismatched = [suite[(i + 1) % len(suite)].reference for i in range(len(suite))]
    own_nll = mean_nll(answer_nll(model, tokenizer, prompts, own))
    wrong_nll = mean_nll(answer_nll(model, tokenizer, prompts, mismatched))
    assert own_nll < wrong_nll, (own_nll, wrong_nll, own)

"""OpenAI's chat fine-tuning format rules, checked locally before anything is uploaded."""

from __future__ import annotations

import json
import math

import bpe_openai
import pytest

from finetune_pipeline.lib.training.openai import format_check as openai_format
from finetune_pipeline.lib.training.openai.format_check import (
    FormatError,
    count_chat_tokens,
    expected_epochs,
    token_counter,
    validate_dataset,
    validate_file,
)
from finetune_pipeline_tests.helpers import write_jsonl

MODEL = "gpt-4o-mini-2024-07-18"
GOOD = {"messages": [{"role": "system", "content": "Classify the message. Reply with JSON."},
                     {"role": "user", "content": "My card was charged twice for one order."},
                     {"role": "assistant", "content": '{"category": "billing"}'}]}


def bad_file(path):
    return write_jsonl(path, [
        GOOD,                                                                                  # 1 fine
        [1, 2],                                                                                # 2 data_type
        {"messages": []},                                                                      # 3 missing_messages_list
        {**GOOD, "label": "billing"},                                                          # 4 example_unrecognized_key
        {"messages": [{"role": "user"}, {"role": "assistant", "content": "ok"}]},              # 5 missing key + content
        {"messages": [{"role": "user", "content": "hi", "lang": "en"}, GOOD["messages"][2]]},  # 6 unrecognized key
        {"messages": [{"role": "robot", "content": "beep"}, GOOD["messages"][2]]},             # 7 unrecognized_role
        {"messages": [GOOD["messages"][1], {"role": "assistant", "content": ""}]},             # 8 missing_content
        {"messages": [GOOD["messages"][1]]},                                           # 9 no assistant message
        '{"messages": [ not json',                                                             # 10 invalid_json
    ])


def test_every_rule_of_openais_checker_is_counted_by_type_with_file_and_line(tmp_path):
    path = bad_file(tmp_path / "train.jsonl")
    count, _ = token_counter(MODEL)
    report = validate_file(path, count, token_limit=10_000)

    assert report.examples == 10
    assert report.error_counts() == {
        "data_type": 1, "example_missing_assistant_message": 1, "example_unrecognized_key": 1, "invalid_json": 1,
        "message_missing_key": 1, "message_unrecognized_key": 1, "missing_content": 2,
        "missing_messages_list": 1, "unrecognized_role": 1}
    lines = {(i.line, i.rule) for i in report.issues}
    assert lines == {(2, "data_type"), (3, "missing_messages_list"), (4, "example_unrecognized_key"),
                     (5, "message_missing_key"), (5, "missing_content"), (6, "message_unrecognized_key"),
                     (7, "unrecognized_role"), (8, "missing_content"), (9, "example_missing_assistant_message"),
                     (10, "invalid_json")}
    # Every message names the file, the line and the rule.
    assert str(report.issues[0]) == f"{path} line 2: data_type: each line must be a JSON object, got list"
    assert f"{path} line 6: message_unrecognized_key: message 1 has unrecognized key(s) ['lang']" in map(
        str, report.issues)
    # Only the one valid line was token-counted.
    assert len(report.token_counts) == 1


def test_a_failed_check_raises_with_counts_and_lines_and_a_clean_one_passes(tmp_path):
    train = bad_file(tmp_path / "train.jsonl")
    val = write_jsonl(tmp_path / "val.jsonl", [GOOD] * 3)
    with pytest.raises(FormatError) as e:
        validate_dataset(train, val, model=MODEL, token_limit=10_000, min_examples=1).raise_for_errors()
    assert str(e.value).startswith("OpenAI format check failed with 10 error(s) by rule {'data_type': 1, ")
    assert f"{train} line 10: invalid_json: not valid JSON" in str(e.value)

    clean = write_jsonl(tmp_path / "clean.jsonl", [GOOD] * 12)
    report = validate_dataset(clean, val, model=MODEL, token_limit=10_000, min_examples=10).raise_for_errors()
    assert report.ok and [f.examples for f in report.files] == [12, 3]
    assert report.to_json()["errors"] == {}


def test_tokens_are_counted_with_tiktoken_as_openais_cookbook_does(tmp_path):
    count, how = token_counter(MODEL)
    assert how == "tiktoken o200k_base"
    # An independent o200k implementation (bpe-openai's Rust one) agrees token for token.
    reference = bpe_openai.get_encoding("o200k_base")
    text = "Mon colis n'est pas arrivé 😀 — {\"category\": \"shipping\", \"priority\": \"high\"}"
    assert count(text) == len(reference.encode(text))
    # The chat formula: 3 per message + the tokens of every value, + 3 to prime the reply.
    expected = 3 + sum(3 + len(reference.encode(m["role"])) + len(reference.encode(m["content"]))
                       for m in GOOD["messages"])
    assert count_chat_tokens(GOOD["messages"], count) == expected
    assert validate_file(write_jsonl(tmp_path / "t.jsonl", [GOOD]), count, 10_000).token_counts == [expected]
    # gpt-3.5 models use cl100k_base.
    assert token_counter("gpt-3.5-turbo-0125")[1] == "tiktoken cl100k_base"


def test_token_limit_and_minimum_example_count(tmp_path):
    long = {"messages": [GOOD["messages"][1], {"role": "assistant", "content": "word " * 300}]}
    path = write_jsonl(tmp_path / "train.jsonl", [GOOD, long, GOOD])
    report = validate_dataset(path, None, model=MODEL, token_limit=200, min_examples=5)
    issues = [str(i) for i in report.issues()]
    assert len(issues) == 2
    assert issues[0].startswith(f"{path} line 2: too_many_tokens: ") and "more than the limit of 200" in issues[0]
    assert issues[1] == (f"{path} line 3: too_few_examples: 3 example(s); OpenAI fine-tuning needs at least 5")
    # Billing: each example capped at the limit, times the epochs.
    capped = sum(min(200, n) for n in report.files[0].token_counts)
    assert report.billing_tokens(4) == capped * 4


def test_without_tiktoken_data_the_count_is_a_labelled_estimate(monkeypatch):
    def unavailable(name):
        raise FileNotFoundError(f"no {name} here")

    monkeypatch.setattr(openai_format, "_tiktoken_encoding", unavailable)
    count, how = token_counter(MODEL)
    assert how.startswith("estimate: ceil(utf-8 bytes / 4)") and "no o200k_base here" in how
    assert count("abcdefgh") == 2 and count("é") == math.ceil(2 / 4)


@pytest.mark.parametrize("n_examples, n_epochs, epochs", [
    (10, "auto", 10),      # few examples: enough epochs to see ~100 examples
    (3000, "auto", 3),     # the default target
    (10_000, "auto", 2),   # many: at most ~25,000 examples seen
    (10, 5, 5),            # explicit wins
])
def test_expected_epochs_follow_openais_auto_heuristic(n_examples, n_epochs, epochs):
    assert expected_epochs(n_examples, n_epochs) == epochs


def test_validation_report_json_lists_every_issue(tmp_path):
    path = bad_file(tmp_path / "train.jsonl")
    report = validate_dataset(path, None, model=MODEL, token_limit=10_000, min_examples=1)
    doc = json.loads(json.dumps(report.to_json()))
    assert doc["ok"] is False and len(doc["issues"]) == 10
    assert doc["files"][str(path)]["examples"] == 10

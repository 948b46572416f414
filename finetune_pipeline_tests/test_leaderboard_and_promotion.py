"""Leaderboard ranking, pictures and costs; the promotion gate and its history.

Three remote versions answer through the OpenAI-compatible backend (recorded
response shapes via respx) with different quality, so the ranking has real,
distinct scores to order; the gate is then exercised on that leaderboard.
"""

from __future__ import annotations

import json

import httpx
import pytest
import respx

from finetune_pipeline.lib import stages
from finetune_pipeline.lib.config import config_from_dict
from finetune_pipeline.lib.evaluation.confusion import NO_VALUE
from finetune_pipeline.lib.evaluation.confusion import confusion_matrix as confusion_of_answers
from finetune_pipeline.lib.evaluation.report import confusion_of
from finetune_pipeline.lib.stages import promotion as promotion_stages
from finetune_pipeline.lib.storage.artifacts import ArtifactRef
from finetune_pipeline.lib.versions.leaderboard import Leaderboard
from finetune_pipeline.lib.versions.promotion import PromotionStore, decide
from finetune_pipeline.lib.versions.registry import Registry
from finetune_pipeline_tests.helpers import SYSTEM, write_jsonl
from finetune_pipeline_tests.test_eval_backends import MOCKER, _completion


def confusion_matrix(predictions_file, field):
    """(labels, matrix) of a predictions.jsonl through the one confusion-matrix function."""
    rows = [json.loads(line) for line in open(predictions_file)]
    cm = confusion_of_answers([r["expected"] for r in rows], [r["prediction"] for r in rows], field)
    return cm.labels, cm.matrix


ROWS = [("Charged twice for one order", "billing"), ("Parcel never arrived", "shipping"),
        ("Cannot log in since the update", "account"), ("Refund still not here", "billing")]
# How many of the four each remote model gets right (the rest answer "other").
CORRECT = {"ft-good": 4, "ft-fair": 3, "ft-poor": 1}
PNG = b"\x89PNG\r\n\x1a\n"


def _answer(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    model, user = body["model"], body["messages"][-1]["content"]
    index = [text for text, _ in ROWS].index(user)
    category = dict(ROWS)[user] if index < CORRECT[model.split(":")[-1]] else "other"
    return httpx.Response(200, json=_completion(json.dumps({"category": category}), model))


@pytest.fixture
def board_setup(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    cfg = config_from_dict({"artifacts_root": str(tmp_path / "artifacts"),
                            "promotion": {"primary_metric": "accuracy/category", "margin": 0.1}}, tmp_path)
    records = [{"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text},
                             {"role": "assistant", "content": json.dumps({"category": cat})}]} for text, cat in ROWS]
    write_jsonl(tmp_path / "dataset" / "test.jsonl", records)
    eval_set = stages.eval_set(cfg, ArtifactRef("training_dataset", "d0", str(tmp_path / "dataset")))
    registry = Registry(cfg.artifacts_dir)
    for i, key in enumerate(CORRECT):
        registry.register(key, "openai", remote_id=f"ft:gpt-4o-mini-2024-07-18:acme:{key}",
                          info={"base_model": "gpt-4o-mini-2024-07-18", "trained_tokens": 100_000 * (i + 1)})
    registry.register("ft-unevaluated", "openai", remote_id="ft:gpt-4o-mini-2024-07-18:acme:ft-new")
    with respx.mock(using=MOCKER) as mock:
        mock.post("https://api.openai.com/v1/chat/completions").mock(side_effect=_answer)
        for key in CORRECT:
            stages.model_eval(cfg, key, eval_set)
    return cfg, eval_set


def test_leaderboard_ranks_by_primary_metric_with_costs_and_pictures(board_setup):
    cfg, eval_set = board_setup
    ref = promotion_stages.leaderboard(cfg, eval_set, [*CORRECT, "ft-unevaluated"])
    board = Leaderboard.load(ref.dir)
    assert [r.version for r in board.rows] == ["ft-good", "ft-fair", "ft-poor"]
    assert [r.metrics["accuracy/category"] for r in board.rows] == [1.0, 0.75, 0.25]
    assert board.metrics[0] == "accuracy/category" and board.eval_set == eval_set.key
    assert board.missing == {"ft-unevaluated": f"not evaluated on eval set {eval_set.key} with the current "
                                               "eval settings"}
    # OpenAI training cost from the price table: tokens x USD per 1M tokens.
    assert [r.cost_usd for r in board.rows] == pytest.approx([0.3, 0.6, 0.9])
    assert [r.tokens_trained for r in board.rows] == [100_000, 200_000, 300_000]
    # OpenAI bills answers per token: the eval's billed tokens (31 in, 17 out) at ft:gpt-4o-mini's token prices.
    assert all(r.inference_device == "api" and r.prompt_tokens == 31 and r.completion_tokens == 17
               for r in board.rows)
    assert [r.usd_per_1k_requests for r in board.rows] == pytest.approx([1000 * (31 * 0.30 + 17 * 1.20) / 1e6] * 3)
    assert (ref.dir / "metrics.png").read_bytes().startswith(PNG)
    assert (ref.dir / "confusion_category.png").read_bytes().startswith(PNG)
    confusion = ref.info["confusion"]
    assert confusion["version"] == "ft-good" and confusion["field"] == "category"
    assert confusion["labels"] == ["account", "billing", "shipping"]
    assert confusion["matrix"] == [[1, 0, 0], [0, 2, 0], [0, 0, 1]]  # the best version: all on the diagonal
    table = board.markdown()
    assert table.splitlines()[2].startswith("| 1 | ft-good | openai | 1.000 [1.000, 1.000] |")
    assert f"suites: task {eval_set.key}" in table and "*ft-unevaluated: not evaluated" in table
    # Same evals, same leaderboard artifact.
    assert promotion_stages.leaderboard(cfg, eval_set, [*CORRECT, "ft-unevaluated"]).cache_hit


def test_confusion_matrix_counts_unparseable_predictions(board_setup, tmp_path):
    cfg, eval_set = board_setup
    board = promotion_stages.collect(cfg, eval_set, list(CORRECT))
    poor = next(r for r in board.rows if r.version == "ft-poor")
    labels, matrix = confusion_matrix(f"{poor.eval_path}/predictions.jsonl", "category")
    stored = confusion_of(poor.eval_path, "category")  # what the leaderboard draws for the eval folder
    assert (stored.labels, stored.matrix) == (labels, matrix)
    assert labels == ["account", "billing", "shipping", "other"]
    assert matrix[labels.index("billing")][labels.index("other")] == 1  # "Refund still not here" -> other
    assert sum(map(sum, matrix)) == 4
    # An answer that does not parse, or parses without the field, is counted in the NO_VALUE column.
    odd = write_jsonl(tmp_path / "odd.jsonl", [
        {"expected": '{"category": "billing"}', "prediction": "Sure! billing"},
        {"expected": '{"category": "billing"}', "prediction": '{"sentiment": "negative"}'},
        {"expected": '{"category": "account"}', "prediction": '{"category": "account"}'}])
    assert confusion_matrix(odd, "category") == (["account", "billing", NO_VALUE], [[1, 0, 0], [0, 0, 2], [0, 0, 0]])


def test_promotion_gate_margin_checks_and_history(board_setup):
    cfg, eval_set = board_setup
    board = promotion_stages.collect(cfg, eval_set, list(CORRECT))
    store = PromotionStore(cfg.artifacts_dir)

    first = decide(board, None, {}, margin=0.1)
    assert first.promoted and first.champion == "ft-good" and "(first champion)" in first.reasons[0]
    store.record(first, Registry(cfg.artifacts_dir).get("ft-good"))
    assert store.champion()["version"] == "ft-good" and store.champion()["score"] == 1.0

    # ft-poor is champion (say, from an older run): ft-good beats it by 0.75 > 0.1 but its check failed,
    # so the next best, ft-fair (0.5 > 0.1), is promoted instead.
    checks = {"ft-good": {"merged_matches_base_plus_adapter": False}, "ft-fair": {"merged_matches_base_plus_adapter": True}}
    d = decide(board, "ft-poor", checks, margin=0.1)
    assert d.promoted and d.champion == "ft-fair"
    assert d.reasons[0] == "ft-good: blocking check(s) merged_matches_base_plus_adapter failed"
    # A check that never ran blocks as well.
    d = decide(board, "ft-poor", {"ft-good": {"c": None}, "ft-fair": {"c": None}}, margin=0.1)
    assert not d.promoted and d.champion == "ft-poor" and "c never ran" in d.reasons[0]

    # Beating the champion by no more than the margin is not enough.
    d = decide(board, "ft-fair", {}, margin=0.25)
    assert not d.promoted and d.champion == "ft-fair"
    assert d.reasons == ["ft-good: accuracy/category 1.0000 does not beat champion ft-fair (0.7500) by more than 0.25"]
    assert decide(board, "ft-fair", {}, margin=0.2).champion == "ft-good"

    # A champion without an eval on this eval set is kept, and the decision says how to fix it.
    d = decide(board, "ft-unevaluated", {}, margin=0.1)
    assert not d.promoted and "backfill-evals" in d.reasons[0]

    # History: every decision, an unchanged repeat only once.
    kept = decide(board, "ft-good", {}, margin=0.1)
    store.record(kept, None)
    store.record(decide(board, "ft-good", {}, margin=0.1), None)
    history = store.history()
    assert [(h["champion"], h["promoted"]) for h in history] == [("ft-good", True), ("ft-good", False)]
    assert history[1]["reasons"][0].startswith("ft-fair: accuracy/category 0.7500 does not beat champion ft-good")

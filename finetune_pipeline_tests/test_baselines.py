"""Prompting baselines as model versions: the k-shot recipe, its key and lineage, constrained decoding, and an
API model answered through the OpenAI-compatible backend (recorded response shapes)."""

from __future__ import annotations

import json

import httpx
import pytest
import respx

from finetune_pipeline.lib import stages
from finetune_pipeline.lib.config import load_config
from finetune_pipeline.lib.config.errors import ConfigError
from finetune_pipeline.lib.data.cleaning import read_split
from finetune_pipeline.lib.evaluation.prompt_recipe import PromptRecipe, draw_shots, json_shape_outputs, row_hash
from finetune_pipeline.lib.evaluation.report import EvalReport
from finetune_pipeline.lib.stages import promotion as promotion_stages
from finetune_pipeline.lib.versions.leaderboard import Leaderboard
from finetune_pipeline_tests.helpers import SAMPLE_RAW, write_config
from finetune_pipeline_tests.test_eval_backends import MOCKER, _completion


def _records(outputs: list[dict]) -> list[dict]:
    return [{"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": f"q{i}"},
                          {"role": "assistant", "content": json.dumps(o)}]} for i, o in enumerate(outputs)]


def test_per_class_draw_shows_every_class_before_any_twice_and_is_seeded():
    train = _records([{"c": c} for c in "aaaaabbbcd"])
    shots = draw_shots(train, 4, "per_class", "c", seed=1)
    assert sorted(json.loads(s.assistant)["c"] for s in shots) == ["a", "b", "c", "d"]
    assert [s.line for s in shots] == [s.line for s in draw_shots(train, 4, "per_class", "c", seed=1)]
    six = [json.loads(s.assistant)["c"] for s in draw_shots(train, 6, "per_class", "c", seed=1)]
    assert sorted(six[:4]) == ["a", "b", "c", "d"] and set(six[4:]) <= {"a", "b"}
    # Every shot names its training row by line and content hash.
    assert all(row_hash(train[s.line - 1]) == s.sha256 and s.user == f"q{s.line - 1}" for s in shots)
    randomly = draw_shots(train, 4, "random", "c", seed=1)
    assert randomly != draw_shots(train, 4, "random", "c", seed=2)
    with pytest.raises(ValueError, match="11 shots asked for, but the training split has 10 rows"):
        draw_shots(train, 11, "random", "c", seed=1)


def test_recipe_puts_shots_after_the_system_turn():
    recipe = PromptRecipe(shots=draw_shots(_records([{"c": "a"}, {"c": "b"}]), 2, "random", "c", 0))
    convo = recipe.apply([{"role": "system", "content": "S"}, {"role": "user", "content": "real"}])
    assert [m["role"] for m in convo] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert convo[-1]["content"] == "real" and convo[0]["content"] == "S"
    assert [m["role"] for m in recipe.apply([{"role": "user", "content": "x"}])] == ["user", "assistant"] * 2 + ["user"]


def test_json_shape_is_every_combination_of_the_training_values_rendered_as_trained():
    train = _records([{"category": "billing", "priority": "low"}, {"category": "shipping", "priority": "high"}])
    outputs = json_shape_outputs(train)
    assert len(outputs) == 4 and json.dumps({"category": "shipping", "priority": "low"}) in outputs
    assert all(r["messages"][-1]["content"] in outputs for r in train)
    with pytest.raises(ValueError, match="training row 2 is not JSON"):
        json_shape_outputs(_records([{"a": "x"}]) + [{"messages": [{"role": "assistant", "content": "free text"}]}])
    many = _records([{"text": f"answer number {i}"} for i in range(5001)])
    with pytest.raises(ValueError, match="5001 answers"):
        json_shape_outputs(many)


def test_baseline_config_rules_are_one_line_each(tmp_path):
    path = write_config(tmp_path, SAMPLE_RAW, baselines=[{"shots": 2, "api_model": "gpt-4o-mini",
                                                          "constrained": True},
                                                         {"model": "base-x", "api_model": "gpt-4o-mini"}])
    with pytest.raises(ConfigError) as e:
        load_config(path)
    text = str(e.value)
    assert "baselines[0].constrained needs a local model" in text
    assert "set baselines[1].model or baselines[1].api_model, not both" in text


@pytest.fixture
def baseline_run(tmp_path):
    path = write_config(tmp_path, SAMPLE_RAW, eval={"limit": 6, "max_new_tokens": 8, "latency_requests": 3},
                        baselines=[{"shots": 3}, {"shots": 3, "constrained": True}, {"shots": 0}])
    cfg = load_config(path)
    raw, base = stages.raw_examples(cfg), stages.base_model(cfg)
    dataset = stages.training_dataset(cfg, raw, base)
    return cfg, base, dataset, stages.eval_set(cfg, dataset)


def test_baselines_are_versions_whose_shots_come_from_train_only_and_are_applied(baseline_run):
    cfg, base, dataset, eval_set = baseline_run
    keys = stages.prompt_baselines(cfg, base, dataset)
    # {shots: 0} without a constraint is the base version itself: nothing new is registered for it.
    assert len(keys) == 2 and keys[0].endswith(keys[0][-8:]) and "-3shot-" in keys[0] and "-3shot-json-" in keys[1]
    assert stages.prompt_baselines(cfg, base, dataset) == keys  # the same recipe: the same keys (cache hits)
    registry = stages.registry(cfg)
    free, constrained = registry.get(keys[0]), registry.get(keys[1])
    assert free.kind == "prompted" and free.info["model"] == base.info["version_key"]
    # The shots are training rows: their content is in train.jsonl, never in val or test.
    recipe = PromptRecipe.load(stages.store(cfg).dir(free.artifact.asset, free.artifact.key))
    hashes = {split: {row_hash(r) for r in read_split(dataset.dir / f"{split}.jsonl")}
              for split in ("train", "val", "test")}
    assert len(recipe.shots) == 3 and {s.sha256 for s in recipe.shots} <= hashes["train"]
    assert not {s.sha256 for s in recipe.shots} & (hashes["val"] | hashes["test"])
    lineage = stages.store(cfg).lineage(free.artifact.asset, free.artifact.key)
    assert lineage["info"]["shown_lines"] == [s.line for s in recipe.shots]
    assert any(i.get("asset") == "training_dataset" and i.get("key") == dataset.key for i in lineage["inputs"])

    reports = {k: EvalReport.model_validate(stages.model_eval(cfg, k, eval_set).info)
               for k in (base.info["version_key"], *keys)}
    base_report, shot_report, json_report = reports.values()
    # The shots are in every prompt: many more prompt tokens than zero-shot, recorded per request.
    assert shot_report.tokens.prompt_per_request > base_report.tokens.prompt_per_request + 3 * 10
    assert shot_report.prompt.shots == 3 and base_report.prompt is None
    # Constrained to the task's JSON shape: every answer is one of the allowed outputs.
    allowed = set(PromptRecipe.load(stages.store(cfg).dir("prompt_recipe", constrained.artifact.key)).allowed_outputs)
    assert json_report.metrics["valid_json"] == 1.0
    rows = EvalReport.load(stages.store(cfg).dir("model_eval", stages.model_eval_key(cfg, keys[1], eval_set)),
                           with_predictions=True).predictions
    assert rows and all(r.prediction in allowed for r in rows)
    # Single-request latency was measured on latency_requests rows; intervals bound every metric.
    assert json_report.latency.requests == 3 and 0 < json_report.latency.p50_s <= json_report.latency.p95_s
    for name, value in json_report.metrics.items():
        if name != "n":
            ci = json_report.intervals[name]
            assert ci.low <= value <= ci.high


API_ANSWER = json.dumps({"category": "billing", "sentiment": "neutral", "priority": "low"})


def test_api_model_baseline_is_answered_by_the_endpoint_and_priced_by_its_tokens(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    path = write_config(tmp_path, SAMPLE_RAW, eval={"limit": 4, "max_new_tokens": 8, "latency_requests": 2},
                        baselines=[{"shots": 2, "api_model": "gpt-4o-mini"}])
    cfg = load_config(path)
    raw, base = stages.raw_examples(cfg), stages.base_model(cfg)
    dataset = stages.training_dataset(cfg, raw, base)
    eval_set = stages.eval_set(cfg, dataset)
    (key,) = stages.prompt_baselines(cfg, base, dataset)
    assert key.startswith("prompt-gpt-4o-mini-2shot-")
    sent = []

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        sent.append(body)
        return httpx.Response(200, json=_completion(API_ANSWER, body["model"]))

    with respx.mock(using=MOCKER) as mock:
        mock.post("https://api.openai.com/v1/chat/completions").mock(side_effect=answer)
        report = EvalReport.model_validate(stages.model_eval(cfg, key, eval_set).info)
    # 4 eval rows + 2 latency requests, each with the 2 shots as earlier turns, to the API model.
    assert len(sent) == 6 and {b["model"] for b in sent} == {"gpt-4o-mini"}
    assert all([m["role"] for m in b["messages"]][1:5] == ["user", "assistant"] * 2 for b in sent)
    assert report.tokens.counted_by == "api usage" and report.tokens.prompt_per_request == 31
    row = promotion_stages.collect(cfg, eval_set, [key]).rows[0]
    # gpt-4o-mini list price: 31 x $0.15 + 17 x $0.60 per 1M tokens, per request, x 1,000.
    assert row.usd_per_1k_requests == pytest.approx(1000 * (31 * 0.15 + 17 * 0.60) / 1e6)
    assert row.cost_usd == 0.0 and row.fine_tuned is False and row.inference_device == "api"


def test_leaderboard_verdict_compares_the_best_fine_tuned_with_the_best_baseline(three_versions):
    cfg = three_versions.cfg("a")
    for key in three_versions.keys:
        stages.model_eval(cfg, key, three_versions.eval_set)
    ref = promotion_stages.leaderboard(cfg, three_versions.eval_set, three_versions.keys)
    board = Leaderboard.load(ref.dir)
    tuned, prompted = board.best_of(True), board.best_of(False)
    assert prompted.version == three_versions.base and tuned.version in (three_versions.lora_a, three_versions.lora_b)
    assert board.comparison is not None and board.comparison.n == tuned.metrics["n"] == 6
    assert board.verdict[0].startswith(("Fine-tuning paid off", "Fine-tuning did not pay off"))
    assert tuned.version in board.verdict[0] and prompted.version in board.verdict[0]
    assert any(line.startswith("Cost to run:") for line in board.verdict)
    assert "**Verdict**" in (ref.dir / "leaderboard.md").read_text()


def test_a_prompted_champion_is_served_as_its_model_with_the_recipe_named(baseline_run):
    cfg, base, dataset, _ = baseline_run
    key = stages.prompt_baselines(cfg, base, dataset)[1]  # 3-shot, constrained to the JSON shape
    _, spec = promotion_stages.serving_spec(cfg, key)
    assert spec.version == key and spec.kind == "prompted"
    assert spec.vllm_model_name == base.info["version_key"]  # the server serves the model it prompts
    assert "prompt_recipe/" in spec.note and "structured outputs" in spec.note

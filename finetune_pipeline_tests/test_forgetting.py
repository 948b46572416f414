"""Forgetting measured on every version: the general suite scored on each version's weights, against its base."""

from __future__ import annotations

import json

from finetune_pipeline.lib import stages
from finetune_pipeline.lib.evaluation.general_suite import read_general_suite
from finetune_pipeline.lib.stages import general
from finetune_pipeline.lib.stages import promotion as promotion_stages
from finetune_pipeline.lib.versions.config import BaselineConfig
from finetune_pipeline.lib.versions.leaderboard import Leaderboard


def test_every_version_gets_general_metrics_and_its_drift_from_its_base(three_versions):
    cfg = three_versions.cfg("a")
    suite = stages.general_suite(cfg)
    assert suite.info["rows"] == len(read_general_suite(general.SHIPPED_SUITE)) >= 50
    base = stages.general_eval(cfg, three_versions.base, suite)
    tuned = stages.general_eval(cfg, three_versions.lora_b, suite)
    # The base against itself: no drift, no change, by construction.
    assert base.info["metrics"]["general/drift"] == 0.0 and base.info["metrics"]["general/nll_delta"] == 0.0
    assert base.info["base_version"] == three_versions.base == tuned.info["base_version"]
    # A trained version moved away from what its base said; the drift is the change in that likelihood.
    m = tuned.info["metrics"]
    assert m["general/drift"] != 0.0
    assert abs(m["general/drift"] - (m["general/base_answer_nll"] - base.info["metrics"]["general/base_answer_nll"])) \
        < 1e-3
    ci = tuned.info["intervals"]["general/drift"]
    assert ci["low"] <= m["general/drift"] <= ci["high"]
    # The base model's greedy answers are what the drift is measured on, one per suite row.
    reference = stages.store(cfg).find("general_reference", _input_key(tuned, "general_reference", cfg))
    answers = [json.loads(line) for line in (reference.dir / general.ANSWERS_FILE).read_text().splitlines()]
    assert len(answers) == suite.info["rows"] and all("answer" in a for a in answers)


def _input_key(ref, asset, cfg):
    lineage = stages.store(cfg).lineage("general_eval", ref.key)
    return next(i["key"] for i in lineage["inputs"] if i.get("asset") == asset)


def test_a_prompted_version_shares_its_models_general_eval_and_the_leaderboard_shows_suites(three_versions):
    cfg_b = three_versions.cfg("a").model_copy(update={"baselines": [BaselineConfig(shots=2)]})
    suite = stages.general_suite(cfg_b)
    raw, base = stages.raw_examples(cfg_b), stages.base_model(cfg_b)
    dataset = stages.training_dataset(cfg_b, raw, base)
    (prompted,) = stages.prompt_baselines(cfg_b, base, dataset)
    first = stages.general_eval(cfg_b, three_versions.base, suite)
    shared = stages.general_eval(cfg_b, prompted, suite)
    # Same weights, same suite: the same artifact (a cache hit), so a prompted baseline forgets nothing.
    assert shared.key == first.key and shared.cache_hit and shared.info["metrics"]["general/drift"] == 0.0
    versions = [three_versions.base, three_versions.lora_a]
    for key in versions:
        stages.model_eval(cfg_b, key, three_versions.eval_set)
        stages.general_eval(cfg_b, key, suite)
    board = Leaderboard.load(promotion_stages.leaderboard(cfg_b, three_versions.eval_set, versions,
                                                          general=suite).dir)
    assert board.suites == {"task": three_versions.eval_set.key, "general": suite.key}
    assert {"general/nll", "general/drift", "general/nll_delta"} <= set(board.metrics)
    assert board.metrics[0] == board.primary_metric and board.metrics[-1].startswith("general/")
    tuned = next(r for r in board.rows if r.version == three_versions.lora_a)
    assert tuned.general_key and tuned.intervals["general/drift"].low <= tuned.metrics["general/drift"]
    assert any(line.startswith("Forgetting: ") for line in board.verdict)

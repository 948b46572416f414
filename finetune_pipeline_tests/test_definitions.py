"""The code location loads and the asset graph is the one the design describes."""

from __future__ import annotations

import dagster as dg

from finetune_pipeline.definitions import defs


def _key(name):
    return dg.AssetKey(name)


def test_definitions_load_with_expected_assets_groups_and_edges():
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == {
        "raw_examples", "training_dataset", "base_model", "lora_adapter", "merged_model", "model_eval",
        "openai_fine_tuned_model", "eval_set", "leaderboard", "champion", "serving_spec", "prompt_baselines",
        "general_suite", "general_eval"}  # the sweep's assets only with a sweep: section (test_sweep.py)
    groups = {k.to_user_string(): graph.get(k).group_name for k in graph.get_all_asset_keys()}
    assert groups == {"raw_examples": "data", "training_dataset": "data", "base_model": "training",
                      "lora_adapter": "training", "merged_model": "training", "model_eval": "evaluation",
                      "openai_fine_tuned_model": "openai", "eval_set": "data", "leaderboard": "promotion",
                      "champion": "promotion", "serving_spec": "promotion", "prompt_baselines": "training",
                      "general_suite": "data", "general_eval": "evaluation"}
    parents = {k.to_user_string(): sorted(p.to_user_string() for p in graph.get(k).parent_keys)
               for k in graph.get_all_asset_keys()}
    assert parents["training_dataset"] == ["base_model", "raw_examples"]
    assert parents["lora_adapter"] == ["base_model", "training_dataset"]
    assert parents["merged_model"] == ["base_model", "lora_adapter"]
    assert parents["openai_fine_tuned_model"] == ["training_dataset"]
    assert parents["eval_set"] == ["training_dataset"]
    assert parents["prompt_baselines"] == ["base_model", "training_dataset"]
    assert parents["model_eval"] == ["base_model", "eval_set", "merged_model", "prompt_baselines"]
    # Each eval suite is its own asset, partitioned by version like model_eval.
    assert parents["general_eval"] == ["base_model", "general_suite", "merged_model", "prompt_baselines"]
    assert graph.get(dg.AssetKey("general_eval")).partitions_def == graph.get(dg.AssetKey("model_eval")).partitions_def
    assert parents["leaderboard"] == ["eval_set", "general_eval", "general_suite", "model_eval"]
    assert parents["champion"] == ["leaderboard"] and parents["serving_spec"] == ["champion"]


def test_training_runs_in_the_gpu_pool_and_eval_is_partitioned_by_version():
    graph = defs.resolve_asset_graph()
    assert graph.get(_key("lora_adapter")).pools == {"gpu"}
    partitions = graph.get(_key("model_eval")).partitions_def
    assert isinstance(partitions, dg.DynamicPartitionsDefinition) and partitions.name == "model_versions"
    # One run per version in a backfill (see docs/model-versions.md).
    policy = graph.get(_key("model_eval")).backfill_policy
    assert policy == dg.BackfillPolicy.multi_run(max_partitions_per_run=1)


def test_blocking_checks_guard_training():
    specs = {(spec.asset_key.to_user_string(), spec.name): spec.blocking
             for checks in defs.asset_checks for spec in checks.check_specs}
    assert specs == {
        ("training_dataset", "rows_accounted_for"): True,
        ("training_dataset", "no_input_shared_between_splits"): True,
        ("training_dataset", "min_train_rows"): True,
        ("training_dataset", "recommended_train_rows"): False,  # a warning, not a stop
        ("merged_model", "merged_matches_base_plus_adapter"): True,
    }

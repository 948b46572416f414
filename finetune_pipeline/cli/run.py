"""`finetune-pipeline run --config FILE` and `demo`: materialize the graph through a local Dagster instance."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from finetune_pipeline.cli.instance import use_repo_dagster_home
from finetune_pipeline.lib.config import DEFAULT_CONFIG, load_config

# The console shows INFO and up (progress, cache hits, failures); the full
# DEBUG event log is still stored in the instance and shown in the UI.
QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def cmd_run(args: argparse.Namespace) -> int:
    """Materialize the graph for one config file (`demo` is this with configs/demo.yaml)."""
    if args.config:
        os.environ["FINETUNE_PIPELINE_CONFIG"] = str(Path(args.config).resolve())
    cfg = load_config(os.environ.get("FINETUNE_PIPELINE_CONFIG"))
    home = use_repo_dagster_home()

    import dagster as dg

    from finetune_pipeline.cli.summary import print_summary
    from finetune_pipeline.definitions import build_definitions

    defs = build_definitions(cfg)

    started = time.time()
    with dg.DagsterInstance.get() as instance:
        print(f"Dagster instance: {home} (open the UI with: dagster dev -w workspace.yaml)", flush=True)
        print(f"config: {os.environ.get('FINETUNE_PIPELINE_CONFIG') or DEFAULT_CONFIG}", flush=True)
        result = defs.resolve_job_def("train_and_merge").execute_in_process(
            instance=instance, run_config=QUIET, raise_on_error=False)
        if not result.success:
            _report_failure(result)
            return 1
        refs = {name: result.output_for_node(name) for name in
                ("raw_examples", "training_dataset", "base_model", "lora_adapter", "merged_model")}
        baselines = _baseline_versions(result)
        versions = [refs["base_model"].info["version_key"], *baselines, refs["merged_model"].info["version_key"]]
        evals = {}
        eval_job = defs.resolve_job_def("evaluate_version")
        # Every version on every suite (model_eval: the test split; general_eval: the general suite).
        for version in versions:
            r = eval_job.execute_in_process(instance=instance, partition_key=version, run_config=QUIET,
                                            raise_on_error=False)
            if not r.success:
                _report_failure(r)
                return 1
            evals[version] = r.output_for_node("model_eval")
        # The leaderboard (with the verdict), the champion decision and the serving spec.
        promoted = defs.resolve_job_def("promote").execute_in_process(instance=instance, run_config=QUIET,
                                                                      raise_on_error=False)
        if not promoted.success:
            _report_failure(promoted)
            return 1
        board = promoted.output_for_node("leaderboard")
        champion = promoted.output_for_node("champion")
    print_summary(cfg, refs, evals, time.time() - started, title=f"finetune-pipeline {args.command}",
                  board=board, champion=champion)
    return 0


def _baseline_versions(result) -> list[str]:
    """The prompting baselines' version keys, as the prompt_baselines asset recorded them in this run."""
    for materialization in result.asset_materializations_for_node("prompt_baselines"):
        return list(materialization.metadata["versions"].value)
    return []


def _report_failure(result) -> None:
    for event in result.all_events:
        if event.is_failure and event.event_specific_data is not None:
            error = getattr(event.event_specific_data, "error", None)
            if error is not None:
                print(f"FAILED in {event.step_key}: {error.message.strip()}", file=sys.stderr)
    for check in result.get_asset_check_evaluations():
        if not check.passed:
            print(f"CHECK FAILED: {check.asset_key.to_user_string()}.{check.check_name}: "
                  f"{ {k: v.value for k, v in check.metadata.items()} }", file=sys.stderr)

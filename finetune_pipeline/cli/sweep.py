"""`finetune-pipeline sweep --config FILE`: a recipe sweep through the local Dagster instance.

The same assets the UI materializes (sweep_adapter, sweep_model, sweep_winner), run
in process as `run` does, so every point's training and lineage is in the
instance: the inputs once, then one run per point, then the winner, then the
winner's evaluation on the test split (reported; it chose nothing).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from finetune_pipeline.cli.instance import use_repo_dagster_home
from finetune_pipeline.cli.run import QUIET, _report_failure
from finetune_pipeline.lib.config import load_config


def cmd_sweep(args: argparse.Namespace) -> int:
    os.environ["FINETUNE_PIPELINE_CONFIG"] = str(Path(args.config).resolve())
    cfg = load_config(os.environ["FINETUNE_PIPELINE_CONFIG"])
    points = cfg.sweep_points()
    if not points:
        raise ValueError(f"{args.config}: no sweep: section (sweep.grid or sweep.points); see docs/sweeps.md")
    home = use_repo_dagster_home()

    import dagster as dg

    from finetune_pipeline.definitions import build_definitions
    from finetune_pipeline.defs.sweep import SWEEP_POINTS
    from finetune_pipeline.lib.reporting.markdown import fmt, markdown_table
    from finetune_pipeline.lib.stages.sweep import load_selection

    defs = build_definitions(cfg)
    started = time.time()
    with dg.DagsterInstance.get() as instance:
        print(f"Dagster instance: {home}", flush=True)
        print(f"config: {os.environ['FINETUNE_PIPELINE_CONFIG']}; {len(points)} point(s), chosen by "
              f"{cfg.sweep.select_by} on the val split", flush=True)
        if not _ok(defs.resolve_job_def("sweep_inputs").execute_in_process(
                instance=instance, run_config=QUIET, raise_on_error=False)):
            return 1
        instance.add_dynamic_partitions(SWEEP_POINTS.name, [p.name for p in points])
        point_job = defs.resolve_job_def("sweep_point")
        for i, point in enumerate(points, start=1):
            print(f"[{i}/{len(points)}] {point.name}: {point.settings_text()}", flush=True)
            result = point_job.execute_in_process(instance=instance, partition_key=point.name, run_config=QUIET,
                                                  raise_on_error=False)
            if not _ok(result):
                return 1
            adapter, record = result.output_for_node("sweep_adapter"), result.output_for_node("sweep_model")
            how = "cache hit, not retrained" if adapter.cache_hit else "trained"
            value = record.info["validation"].get(cfg.sweep.select_by)
            print(f"[{i}/{len(points)}] {point.name}: {how}, train {fmt(adapter.info.get('train_seconds'), 1)} s, "
                  f"{cfg.sweep.select_by} {fmt(value, 4)} (val), version {record.info['version']}", flush=True)
        chosen = defs.resolve_job_def("sweep_select").execute_in_process(instance=instance, run_config=QUIET,
                                                                           raise_on_error=False)
        if not _ok(chosen):
            return 1
        winner_ref = chosen.output_for_node("sweep_winner")
        selection = load_selection(winner_ref)
        test_metrics = {}
        if not args.no_eval:
            eval_job = defs.resolve_job_def("evaluate_version")
            for version in winner_ref.info["evaluate_on_test"]:
                print(f"evaluating {version} on the test split", flush=True)
                r = eval_job.execute_in_process(instance=instance, partition_key=version, run_config=QUIET,
                                                raise_on_error=False)
                if not _ok(r):
                    return 1
                test_metrics[version] = r.output_for_node("model_eval").info["metrics"]

    print(f"\n=== finetune-pipeline sweep ({selection.select_by} on the val split; "
          f"{'lower' if selection.lower_is_better else 'higher'} wins) ===\n")
    by_name = {p.name: p for p in selection.points}
    print(markdown_table(["rank", "point", "settings", selection.select_by, "train s", "version"],
                         [[i, name, ", ".join(f"{k}={v}" for k, v in by_name[name].settings.items()) or "as configured", by_name[name].validation.get(selection.select_by),
                           by_name[name].train_seconds, by_name[name].version]
                          for i, name in enumerate(selection.ranking, start=1)]))
    print(f"\nwinner: {selection.winner} (model version {selection.winner_version}), chosen by "
          f"{selection.select_by} on the val split")
    primary = cfg.promotion.primary_metric
    for version, metrics in test_metrics.items():
        print(f"test split, {version}: {primary} {fmt(metrics.get(primary), 4)} (reported, not used to choose)")
    print(f"sweep record: {winner_ref.path}")
    print(f"wall time: {time.time() - started:.0f}s")
    return 0


def _ok(result) -> bool:
    if not result.success:
        _report_failure(result)
    return result.success

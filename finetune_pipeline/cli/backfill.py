"""`finetune-pipeline backfill-evals`: a Dagster backfill of model_eval over model versions."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from finetune_pipeline.cli.instance import use_repo_dagster_home
from finetune_pipeline.lib.config import load_config


def cmd_backfill_evals(args: argparse.Namespace) -> int:
    """Launch a real Dagster asset backfill of model_eval over model versions.

    It is recorded in the instance like one launched from the UI (Overview ->
    Backfills); the daemon that `dagster dev` starts executes it, one run per
    version (model_eval's backfill policy), then the leaderboard, champion and
    serving spec once every eval is done.
    """
    cfg_path = Path(args.config).resolve() if args.config else None
    if cfg_path is not None:
        load_config(cfg_path)  # fail here, with the file named, not in every run
    use_repo_dagster_home()

    import dagster as dg
    from dagster._core.execution.backfill import PartitionBackfill
    from dagster._core.utils import make_new_backfill_id

    from finetune_pipeline.definitions import defs
    from finetune_pipeline.defs.training import MODEL_VERSIONS

    with dg.DagsterInstance.get() as instance:
        known = instance.get_dynamic_partitions(MODEL_VERSIONS.name)
        versions = args.versions or known
        unknown = sorted(set(versions) - set(known))
        if unknown:
            raise KeyError(f"not model versions in this instance: {unknown} (known: {', '.join(known) or 'none'})")
        if not versions:
            raise ValueError("no model versions registered yet: materialize base_model (or run "
                             "`finetune-pipeline demo`) first")
        selection = [dg.AssetKey("model_eval")]
        if not args.no_promote:
            selection += [dg.AssetKey(k) for k in ("leaderboard", "champion", "serving_spec")]
        run_config = ({"resources": {"settings": {"config": {"config_path": str(cfg_path)}}}}
                      if cfg_path is not None else None)
        backfill = PartitionBackfill.from_asset_partitions(
            backfill_id=make_new_backfill_id(), asset_graph=defs.resolve_asset_graph(),
            partition_names=list(versions), asset_selection=selection, backfill_timestamp=time.time(),
            tags={"finetune/command": "backfill-evals"}, dynamic_partitions_store=instance,
            all_partitions=False, title=f"backfill-evals: {len(versions)} model version(s)",
            description="Re-evaluate model versions on the current eval set", run_config=run_config)
        instance.add_backfill(backfill)
    print(f"backfill {backfill.backfill_id}: model_eval over {len(versions)} version(s): {', '.join(versions)}"
          + ("" if args.no_promote else "; then leaderboard, champion, serving_spec"))
    print(f"  Dagster instance: {os.environ['DAGSTER_HOME']}; the daemon started by `dagster dev -w workspace.yaml` "
          f"runs it; watch it at http://127.0.0.1:3000/runs/b/{backfill.backfill_id}")
    return 0

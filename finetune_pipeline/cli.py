"""The `finetune-pipeline` command."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from finetune_pipeline.lib import stores as storage
from finetune_pipeline.lib.storage.artifacts import read_lineage
from finetune_pipeline.lib.config import DEFAULT_CONFIG, PROJECT_ROOT, ConfigError, load_config
from finetune_pipeline.lib.versions.lineage import format_lineage, version_lineage


# The console shows INFO and up (progress, cache hits, failures); the full
# DEBUG event log is still stored in the instance and shown in the UI.
QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def _use_repo_dagster_home() -> Path:
    """A persistent local Dagster instance (SQLite) unless DAGSTER_HOME says otherwise."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / ".dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return home


def cmd_run(args: argparse.Namespace) -> int:
    """Materialize the graph for one config file (`demo` is this with configs/demo.yaml)."""
    if args.config:
        os.environ["FINETUNE_PIPELINE_CONFIG"] = str(Path(args.config).resolve())
    cfg = load_config(os.environ.get("FINETUNE_PIPELINE_CONFIG"))
    home = _use_repo_dagster_home()

    import dagster as dg

    from finetune_pipeline.definitions import build_definitions
    from finetune_pipeline.demo_summary import print_summary

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
        versions = [refs["base_model"].info["version_key"], refs["merged_model"].info["version_key"]]
        evals = {}
        eval_job = defs.resolve_job_def("evaluate_version")
        for version in versions:
            r = eval_job.execute_in_process(instance=instance, partition_key=version, run_config=QUIET,
                                            raise_on_error=False)
            if not r.success:
                _report_failure(r)
                return 1
            evals[version] = r.output_for_node("model_eval")
    print_summary(cfg, refs, evals, time.time() - started, title=f"finetune-pipeline {args.command}")
    return 0


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


def cmd_lineage(args: argparse.Namespace) -> int:
    cfg = load_config(args.config or os.environ.get("FINETUNE_PIPELINE_CONFIG"))
    tree = version_lineage(storage.registry(cfg), args.version)
    print(json.dumps(tree, indent=2) if args.json else format_lineage(tree))
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    """Bring a version's files (and, for a LoRA version, its base model and adapter) into this machine's mirror."""
    cfg = load_config(args.config or os.environ.get("FINETUNE_PIPELINE_CONFIG"))
    if cfg.artifacts_url is None:
        print(f"artifacts_root is a folder ({cfg.artifacts_dir}); nothing to pull")
        return 0
    registry = storage.registry(cfg)
    manifest = registry.ensure_local(registry.get(args.version))
    pulled = [manifest["lineage"]] if manifest.get("lineage") else []
    if manifest["kind"] == "lora_merged":  # `serving.mode: lora` serves base + adapter
        remote = storage.remote_of(cfg)
        for i in read_lineage(Path(manifest["lineage"])).get("inputs", []):
            if i.get("asset") in ("base_model", "lora_adapter") and remote.pull_path(Path(i["path"])):
                pulled.append(i["path"])
    for path in pulled:
        print(f"{path}  (from {cfg.artifacts_url})")
    print(f"{args.version}: weights at {manifest['path']}")
    return 0


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
    _use_repo_dagster_home()

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


def cmd_check_data(args: argparse.Namespace) -> int:
    """Counts per file and per reason; exit 1 only when an input cannot be read at all."""
    config_path = args.config or os.environ.get("FINETUNE_PIPELINE_CONFIG")
    cfg = load_config(config_path)
    from finetune_pipeline.lib.models.base_models import load_tokenizer, resolve_base_model
    from finetune_pipeline.lib.data.check_data import check_data, format_report
    from finetune_pipeline.lib.config import DEFAULT_CONFIG
    from finetune_pipeline.lib.training.collate import count_tokens

    # Token lengths are measured as training_dataset measures them: the base model's tokenizer.
    tokenizer = load_tokenizer(resolve_base_model(cfg.model.base_model, cfg.model_cache_dir).path)
    check = check_data(args.paths, cfg.data, lambda messages: count_tokens(tokenizer, messages))
    print(f"check-data: {len(check.files)} file(s) read, {len(check.unreadable)} unreadable; "
          f"rules of {config_path or DEFAULT_CONFIG}, mapping {cfg.data.mapping.format!r}, "
          f"max_tokens {cfg.data.max_tokens} ({cfg.model.base_model} tokenizer)")
    print("\n".join(format_report(check, examples=args.examples)))
    for message in check.unreadable.values():
        print(f"finetune-pipeline check-data: cannot read {message}", file=sys.stderr)
    if not check.accounted_for:
        print("finetune-pipeline check-data: rows not accounted for (a bug): raw != kept + quarantined", file=sys.stderr)
    print(json.dumps(check.summary(), ensure_ascii=False, sort_keys=True), flush=True)
    return 0 if check.accounted_for and not check.unreadable else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="finetune-pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="materialize the whole graph through a local Dagster instance and summarise")
    demo.add_argument("--config", help="config YAML (default: $FINETUNE_PIPELINE_CONFIG or configs/demo.yaml)")
    demo.set_defaults(func=cmd_run)
    run = sub.add_parser("run", help="materialize the whole graph for a config file (e.g. configs/banking77.yaml): "
                                     "raw data to evaluated model versions")
    run.add_argument("--config", required=True, help="config YAML; relative paths in it resolve to its folder")
    run.set_defaults(func=cmd_run)
    lineage = sub.add_parser("lineage", help="print a model version's chain back to the raw files")
    lineage.add_argument("version", help="a model version key, e.g. lora-0123abcd4567")
    lineage.add_argument("--config")
    lineage.add_argument("--json", action="store_true", help="print the lineage tree as JSON")
    lineage.set_defaults(func=cmd_lineage)
    pull = sub.add_parser("pull", help="with artifacts on object storage: fetch a model version's files into this "
                                       "machine's mirror (e.g. on a serving host, before the serving spec's command)")
    pull.add_argument("version", help="a model version key, e.g. lora-0123abcd4567")
    pull.add_argument("--config")
    pull.set_defaults(func=cmd_pull)
    backfill = sub.add_parser("backfill-evals", help="launch a Dagster backfill that re-evaluates model versions")
    backfill.add_argument("versions", nargs="*", help="version keys (default: every registered version)")
    backfill.add_argument("--config", help="config YAML the backfill's runs use (default: the code location's)")
    backfill.add_argument("--no-promote", action="store_true",
                          help="only model_eval; leave leaderboard, champion and serving_spec alone")
    backfill.set_defaults(func=cmd_backfill_evals)
    check = sub.add_parser("check-data", help="run the raw and dataset rules on files or folders; print counts "
                                              "per file and reason, then one JSON line")
    check.add_argument("paths", nargs="+", metavar="PATH", help="raw files (*.jsonl, *.csv, *.parquet) or folders")
    check.add_argument("--config", help="config YAML whose data rules, mapping and base model tokenizer to use "
                                        "(default: $FINETUNE_PIPELINE_CONFIG or configs/demo.yaml)")
    check.add_argument("--examples", type=int, default=3, metavar="N",
                       help="print the first N quarantined rows of each reason (default 3)")
    check.set_defaults(func=cmd_check_data)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, KeyError, ValueError, FileNotFoundError) as e:
        print(f"finetune-pipeline {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The `finetune-pipeline` command: parses arguments and runs one command module.

Each command lives in its own module, imported only when it runs, so a quick
command (check-config, lineage) never pays for torch or Dagster.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from finetune_pipeline.lib.config import ConfigError


def _command(name: str):
    module, function = name.split(":")
    return getattr(importlib.import_module(f"finetune_pipeline.cli.{module}"), function)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="finetune-pipeline", description="Declarative LLM fine-tuning as a Dagster asset graph.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="materialize the whole graph through a local Dagster instance and summarise")
    demo.add_argument("--config", help="config YAML (default: $FINETUNE_PIPELINE_CONFIG or configs/demo.yaml)")
    demo.set_defaults(func="run:cmd_run")
    run = sub.add_parser("run", help="materialize the whole graph for a config file (e.g. configs/banking77.yaml): "
                                     "raw data to evaluated model versions")
    run.add_argument("--config", required=True, help="config YAML; relative paths in it resolve to its folder")
    run.set_defaults(func="run:cmd_run")
    sweep = sub.add_parser("sweep", help="train every point of the config's sweep: section, choose the winner on the "
                                         "val split, evaluate the winner on the test split")
    sweep.add_argument("--config", required=True, help="config YAML with a sweep: section")
    sweep.add_argument("--no-eval", action="store_true", help="stop after choosing the winner (no test-split eval)")
    sweep.set_defaults(func="sweep:cmd_sweep")
    lineage = sub.add_parser("lineage", help="print a model version's chain back to the raw files")
    lineage.add_argument("version", help="a model version key, e.g. lora-0123abcd4567")
    lineage.add_argument("--config")
    lineage.add_argument("--json", action="store_true", help="print the lineage tree as JSON")
    lineage.set_defaults(func="lineage:cmd_lineage")
    pull = sub.add_parser("pull", help="with artifacts on object storage: fetch a model version's files into this "
                                       "machine's mirror (e.g. on a serving host, before the serving spec's command)")
    pull.add_argument("version", help="a model version key, e.g. lora-0123abcd4567")
    pull.add_argument("--config")
    pull.set_defaults(func="lineage:cmd_pull")
    serve = sub.add_parser("serve", help="serve a model version (default: the champion) with vLLM's OpenAI-compatible "
                                         "server on loopback until Ctrl-C (transformers serve without vLLM)")
    serve.add_argument("version", nargs="?", help="a model version key (default: the current champion)")
    serve.add_argument("--config", help="config YAML (default: $FINETUNE_PIPELINE_CONFIG or configs/demo.yaml)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, loopback)")
    serve.add_argument("--port", type=int, help="port to listen on (default: the config's serving.port)")
    serve.set_defaults(func="serve:cmd_serve")
    backfill = sub.add_parser("backfill-evals", help="launch a Dagster backfill that re-evaluates model versions")
    backfill.add_argument("versions", nargs="*", help="version keys (default: every registered version)")
    backfill.add_argument("--config", help="config YAML the backfill's runs use (default: the code location's)")
    backfill.add_argument("--suite", choices=("all", "task", "general"), default="all",
                          help="which eval suites: task (model_eval, the test split), general (general_eval, the "
                               "general suite: forgetting) or all (default)")
    backfill.add_argument("--no-promote", action="store_true",
                          help="only the evals; leave leaderboard, champion and serving_spec alone")
    backfill.add_argument("--url", default="http://127.0.0.1:3000",
                          help="the running Dagster webserver that launches it, as the UI does "
                               "(default: http://127.0.0.1:3000, where `dagster dev -w workspace.yaml` serves)")
    backfill.set_defaults(func="backfill:cmd_backfill_evals")
    check = sub.add_parser("check-data", help="run the raw and dataset rules on files or folders; print counts "
                                              "per file and reason, then one JSON line")
    check.add_argument("paths", nargs="+", metavar="PATH", help="raw files (*.jsonl, *.csv, *.parquet) or folders")
    check.add_argument("--config", help="config YAML whose data rules, mapping and base model tokenizer to use "
                                        "(default: $FINETUNE_PIPELINE_CONFIG or configs/demo.yaml)")
    check.add_argument("--examples", type=int, default=3, metavar="N",
                       help="print the first N quarantined rows of each reason (default 3)")
    check.set_defaults(func="check_data:cmd_check_data")
    check_config = sub.add_parser("check-config", help="validate a config file without running anything: a one-line "
                                                        "summary, or one line per problem (exit 2)")
    check_config.add_argument("file", nargs="?", metavar="FILE", help="config YAML, e.g. configs/demo.yaml")
    check_config.add_argument("--schema", action="store_true",
                              help="print the config's JSON Schema (configs/pipeline.schema.json) instead")
    check_config.set_defaults(func="check_config:cmd_check_config")
    args = parser.parse_args(argv)
    try:
        return _command(args.func)(args)
    except (ConfigError, KeyError, ValueError, FileNotFoundError) as e:
        # A config error has one line per problem; each gets the prefix, so each reads on its own.
        for line in e.lines if isinstance(e, ConfigError) else [str(e)]:
            print(f"finetune-pipeline {args.command}: error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""`finetune-pipeline lineage VERSION` and `pull VERSION`: a model version's history, and its files."""

from __future__ import annotations

import argparse
import json
import os

from finetune_pipeline.lib import stages
from finetune_pipeline.lib.config import load_config
from finetune_pipeline.lib.versions import kinds
from finetune_pipeline.lib.versions.lineage import format_lineage, version_lineage


def cmd_lineage(args: argparse.Namespace) -> int:
    cfg = load_config(args.config or os.environ.get("FINETUNE_PIPELINE_CONFIG"))
    tree = version_lineage(stages.registry(cfg), stages.store(cfg), args.version)
    print(json.dumps(tree, indent=2) if args.json else format_lineage(tree))
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    """Bring what serves a version (for a LoRA version also its base model and adapter) into this machine's mirror."""
    cfg = load_config(args.config or os.environ.get("FINETUNE_PIPELINE_CONFIG"))
    if cfg.artifacts_url is None:
        print(f"artifacts_root is a folder ({cfg.artifacts_dir}); nothing to pull")
        return 0
    store = stages.store(cfg)
    version = stages.registry(cfg).get(args.version)
    for asset, key in kinds.get(version.kind).artifacts_to_serve(version, store):
        print(f"{store.ensure_local(asset, key)}  (from {cfg.artifacts_url})")
    print(f"{args.version}: weights at {version.weights_dir(store)}")
    return 0

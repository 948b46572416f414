"""`finetune-pipeline lineage VERSION` and `pull VERSION`: a model version's history, and its files."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from finetune_pipeline.lib import stores as storage
from finetune_pipeline.lib.config import load_config
from finetune_pipeline.lib.storage.artifacts import read_lineage
from finetune_pipeline.lib.versions.lineage import format_lineage, version_lineage


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

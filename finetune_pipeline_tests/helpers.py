"""Plain helpers and constants shared by the tests: configs in temp folders, JSONL files, seed rows.

Fixtures live in conftest.py; this module has none, so any test (or helper
module such as model_versions.py) imports from here by name.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from finetune_pipeline.lib import PROJECT_ROOT

MODEL_CACHE = PROJECT_ROOT / "data" / "model_cache"
SAMPLE_RAW = PROJECT_ROOT / "data" / "raw"

TINY_TRAIN = {"max_steps": 4, "batch_size": 4, "eval_steps": 2, "logging_steps": 1, "learning_rate": 0.005}
TINY_EVAL = {"limit": 6, "max_new_tokens": 8, "batch_size": 8}

SYSTEM = "Classify the message. Reply with JSON."


def write_config(folder: Path, raw_dir: Path, **sections) -> Path:
    """A config file in `folder` with tiny-model defaults; `sections` override them."""
    values = {
        "data": {"raw_dir": str(raw_dir), "min_train_rows": 5},
        "model": {"base_model": "tiny-random"},
        "train": dict(TINY_TRAIN),
        "eval": dict(TINY_EVAL),
        "artifacts_root": str(folder / "artifacts"),
        "model_cache": str(MODEL_CACHE),
    }
    for name, value in sections.items():
        values[name] = {**values[name], **value} if isinstance(value, dict) and name in values else value
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


def seed_row(text: str, category: str = "billing", **extra) -> dict:
    return {"system_prompt": SYSTEM, "input": text,
            "output": json.dumps({"category": category, "sentiment": "neutral", "priority": "low"}), **extra}


# What `train_and_merge` (the "data" and "training" groups) materializes, cache hits included.
TRAIN_AND_MERGE = ["base_model", "eval_set", "general_suite", "lora_adapter", "merged_model", "prompt_baselines",
                   "raw_examples", "training_dataset"]


def materialized(result) -> list[str]:
    """The assets a Dagster run result materialized, sorted; a partition as `asset[partition]`.

    `execute_in_process` and `dg.materialize` raise on a failed step unless told not to,
    so `result.success` is always true where they return: this is what tests check instead.
    """
    return sorted(e.asset_key.to_user_string() + (f"[{e.partition}]" if e.partition else "")
                  for e in result.get_asset_materialization_events())


def latest_materialization(instance, asset: str, partition: str | None = None):
    """The newest materialization of `asset` (of one partition) in a Dagster instance, or None."""
    import dagster as dg

    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None),
        limit=1).records
    return records[0].asset_materialization if records else None

"""`finetune-pipeline check-config FILE`: validate a config file, and nothing else; `--schema` prints its JSON Schema.

Loads only the config models (no torch, transformers, Dagster, datasets or
peft), so it answers in well under a second: exit 0 with a one-line summary,
or exit 2 with one line per problem on stderr (printed by cli/main.py).
"""

from __future__ import annotations

import argparse

from finetune_pipeline.lib.config import PipelineConfig, load_config
from finetune_pipeline.lib.config.schema import schema_text


def summary(cfg: PipelineConfig) -> str:
    """What the file trains, on what, and where it writes: the settings a typo would change most."""
    t = cfg.train
    method = {"lora": f"LoRA r={t.lora.r}", "qlora": f"QLoRA r={t.lora.r}", "full": "full fine-tuning"}
    length = f"{t.max_steps} step(s)" if t.max_steps > 0 else f"{t.epochs:g} epoch(s)"
    return (f"base model {cfg.model.base_model}, {method[t.effective_method]}, {length}, "
            f"raw data {cfg.data.raw_dir} (format {cfg.data.mapping.format}), artifacts {cfg.artifacts_root}")


def cmd_check_config(args: argparse.Namespace) -> int:
    if args.schema:
        print(schema_text(), end="")
        return 0
    if not args.file:
        raise ValueError("name a config FILE to check, or --schema for the JSON Schema")
    cfg = load_config(args.file)  # a ConfigError is printed line by line by cli/main.py, exit 2
    print(f"{args.file}: valid: {summary(cfg)}")
    return 0

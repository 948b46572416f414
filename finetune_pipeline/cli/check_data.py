"""`finetune-pipeline check-data PATH...`: the raw and dataset rules on any files, writing nothing."""

from __future__ import annotations

import argparse
import json
import os
import sys

from finetune_pipeline.lib.config import load_config


def cmd_check_data(args: argparse.Namespace) -> int:
    """Counts per file and per reason; exit 1 only when an input cannot be read at all."""
    config_path = args.config or os.environ.get("FINETUNE_PIPELINE_CONFIG")
    cfg = load_config(config_path)
    from finetune_pipeline.lib.config import DEFAULT_CONFIG
    from finetune_pipeline.lib.data.check_data import check_data, format_report
    from finetune_pipeline.lib.models.base_models import (
        load_tokenizer,
        resolve_base_model,
    )
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

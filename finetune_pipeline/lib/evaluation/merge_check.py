"""The merged model answers as base + adapter did: greedy outputs of both, loaded the way users load them."""

from __future__ import annotations

import json
from pathlib import Path

from finetune_pipeline.lib.evaluation.generate import generate_batched
from finetune_pipeline.lib.models.base_models import load_for_inference, load_tokenizer
from finetune_pipeline.lib.models.merge import load_with_adapter


def saved_dtype(model_dir: Path) -> str:
    """The dtype a model folder's weights were saved in (config.json; `torch_dtype` before transformers 5)."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    return config.get("dtype") or config.get("torch_dtype") or "float32"


def merged_matches_adapter(
    base_dir: Path, adapter_dir: Path, merged_dir: Path, conversations: list[list[dict]], max_new_tokens: int = 32,
    *, dtype: str | None = None,
) -> tuple[bool, list[dict[str, str]]]:
    """Greedy outputs of base + adapter vs the merged model, loaded with plain transformers on inference_device().

    Both sides run in one dtype: by default the one the merged weights were saved in (the
    training dtype), which is how the merged model is served. Comparing across dtypes would
    report the dtype's rounding as a bad merge. On CPU that is fp32 on both sides, where the
    only difference is fp32 rounding of W + BA (the check has always held there, QLoRA
    adapters included: they merge into the unquantised base like LoRA ones).
    """
    dtype = dtype or saved_dtype(merged_dir)
    tokenizer = load_tokenizer(merged_dir)
    with_adapter = generate_batched(load_with_adapter(base_dir, adapter_dir, dtype=dtype), tokenizer, conversations,
                                    max_new_tokens=max_new_tokens)
    merged = generate_batched(load_for_inference(merged_dir, dtype), tokenizer, conversations, max_new_tokens=max_new_tokens)
    rows = [{"adapter": a, "merged": m} for a, m in zip(with_adapter, merged)]
    return with_adapter == merged, rows

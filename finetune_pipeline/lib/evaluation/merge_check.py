"""The merged model answers as base + adapter did: greedy outputs of both, loaded the way users load them."""

from __future__ import annotations

from pathlib import Path

from finetune_pipeline.lib.evaluation.generate import generate_batched
from finetune_pipeline.lib.models.base_models import load_model, load_tokenizer
from finetune_pipeline.lib.models.merge import load_with_adapter


def merged_matches_adapter(
    base_dir: Path, adapter_dir: Path, merged_dir: Path, conversations: list[list[dict]], max_new_tokens: int = 32
) -> tuple[bool, list[dict[str, str]]]:
    """Greedy outputs of base + adapter vs the merged model, loaded with plain transformers."""
    tokenizer = load_tokenizer(merged_dir)
    with_adapter = generate_batched(load_with_adapter(base_dir, adapter_dir), tokenizer, conversations,
                                    max_new_tokens=max_new_tokens)
    merged = generate_batched(load_model(merged_dir), tokenizer, conversations, max_new_tokens=max_new_tokens)
    rows = [{"adapter": a, "merged": m} for a, m in zip(with_adapter, merged)]
    return with_adapter == merged, rows

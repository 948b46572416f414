"""Merge a LoRA adapter into its base model and check the result.

The merged folder is a plain transformers model (safetensors, tokenizer, chat
template) that `AutoModelForCausalLM` and vLLM load with no PEFT installed.
"""

from __future__ import annotations

from pathlib import Path

from finetune_pipeline.lib.evaluation.generate import generate_batched
from finetune_pipeline.lib.models.base_models import load_model, load_tokenizer


def load_with_adapter(base_dir: Path, adapter_dir: Path, trust_remote_code: bool = False):
    from peft import PeftModel

    base = load_model(base_dir, trust_remote_code=trust_remote_code)
    return PeftModel.from_pretrained(base, str(adapter_dir))


def merge_adapter(base_dir: Path, adapter_dir: Path, out_dir: Path, trust_remote_code: bool = False) -> None:
    model = load_with_adapter(base_dir, adapter_dir, trust_remote_code).merge_and_unload()
    model.save_pretrained(out_dir, safe_serialization=True)
    load_tokenizer(base_dir).save_pretrained(out_dir)


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

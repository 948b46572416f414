"""Merge a LoRA adapter into its base model (the check that the merge is faithful is evaluation/merge_check.py).

The merged folder is a plain transformers model (safetensors, tokenizer, chat
template) that `AutoModelForCausalLM` and vLLM load with no PEFT installed.
"""

from __future__ import annotations

from pathlib import Path

from finetune_pipeline.lib.models.base_models import load_model, load_tokenizer


def load_with_adapter(base_dir: Path, adapter_dir: Path, trust_remote_code: bool = False):
    from peft import PeftModel

    base = load_model(base_dir, trust_remote_code=trust_remote_code)
    return PeftModel.from_pretrained(base, str(adapter_dir))


def merge_adapter(base_dir: Path, adapter_dir: Path, out_dir: Path, trust_remote_code: bool = False) -> None:
    model = load_with_adapter(base_dir, adapter_dir, trust_remote_code).merge_and_unload()
    model.save_pretrained(out_dir, safe_serialization=True)
    load_tokenizer(base_dir).save_pretrained(out_dir)

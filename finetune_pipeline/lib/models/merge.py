"""Merge a LoRA adapter into its base model (the check that the merge is faithful is evaluation/merge_check.py).

The merged folder is a plain transformers model (safetensors, tokenizer, chat
template) that `AutoModelForCausalLM` and vLLM load with no PEFT installed.

A QLoRA adapter is merged like a LoRA one: into the base loaded unquantised,
never into 4-bit weights (merging into nf4 would re-quantise W + BA and lose
the adapter's small update in the rounding).
"""

from __future__ import annotations

from pathlib import Path

from finetune_pipeline.lib.models.base_models import load_for_inference, load_tokenizer
from finetune_pipeline.lib.models.device import resolve_dtype, torch_dtype


def load_with_adapter(base_dir: Path, adapter_dir: Path, trust_remote_code: bool = False, *,
                      dtype: str | None = None):
    """Base (unquantised, in `dtype`: default the training dtype here, `auto`) + adapter, on inference_device()."""
    from peft import PeftModel

    base = load_for_inference(base_dir, dtype or "auto", trust_remote_code=trust_remote_code)
    return PeftModel.from_pretrained(base, str(adapter_dir))


def merge_adapter(base_dir: Path, adapter_dir: Path, out_dir: Path, trust_remote_code: bool = False, *,
                  dtype: str | None = None) -> None:
    """Merge in fp32 on inference_device(), save in `dtype` (the training dtype; default `auto` resolved here).

    fp32 arithmetic makes W + BA exact up to fp32 rounding, so the saved weights carry a
    single rounding, to the saved dtype, as the base's own weights do; merging in bf16 would
    round the update and then the sum. On CPU (fp32 throughout) this is today's merge.
    """
    model = load_with_adapter(base_dir, adapter_dir, trust_remote_code, dtype="float32").merge_and_unload()
    model.to(torch_dtype(dtype or resolve_dtype())).save_pretrained(out_dir, safe_serialization=True)
    load_tokenizer(base_dir).save_pretrained(out_dir)

"""What a CUDA machine would get, checked on CPU: dtype, attention kernel, 4-bit placement, Trainer precision.

CUDA is simulated (the `on_cuda` argument, `device.cuda_available`, `importlib.util.find_spec` for the
flash-attention packages); these tests assert the arguments that would reach `from_pretrained` and
`TrainingArguments`, and claim nothing about speed on a GPU.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util

import pytest
import torch

from finetune_pipeline.lib.evaluation.transformers_backend import TransformersBackend
from finetune_pipeline.lib.models import device
from finetune_pipeline.lib.training.config import TrainConfig
from finetune_pipeline.lib.training.engine import Precision
from finetune_pipeline.lib.training.spec import TrainSpec


@pytest.fixture
def installed(monkeypatch):
    """installed("flash_attn"): find_spec sees those modules (and no other flash package) from now on."""
    real = importlib.util.find_spec
    present: set[str] = set()

    def find_spec(name, *args, **kwargs):
        if name in ("flash_attn", "flash_attn_interface"):
            return importlib.machinery.ModuleSpec(name, None) if name in present else None
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    return present.update


def _precision(method="lora", on_cuda=True, dtype="auto", **train) -> Precision:
    spec = TrainSpec(base_model_dir="m", train_file="t", val_file="v", output_dir="o", work_dir="w",
                     train=TrainConfig(method=method, **train), model_dtype=dtype)
    return Precision(spec, method, on_cuda)


def test_lora_on_cuda_loads_bf16_and_uses_flash_attention_2_for_padding_free_batches(installed):
    installed({"flash_attn"})
    p = _precision()  # packing auto: padding-free on CUDA
    assert p.load_kwargs("lora", TrainConfig().qlora, 0) == {"attn_implementation": "flash_attention_2",
                                                             "dtype": torch.bfloat16}
    assert p.training_args("lora", TrainConfig().qlora) == {"use_cpu": False, "bf16": True, "optim": "adamw_torch"}


def test_flash_attention_3_is_preferred_when_its_interface_is_installed(installed):
    installed({"flash_attn", "flash_attn_interface"})
    assert _precision().attn_implementation == "flash_attention_3"


@pytest.mark.parametrize("why, kwargs", [
    ("no flash package", {}),
    ("padded batches need no variable-length kernel", {"packing": False}),
    ("flash kernels need 16-bit activations", {"dtype": "float32"}),
])
def test_sdpa_when_a_flash_kernel_would_not_apply(installed, why, kwargs):
    if kwargs:
        installed({"flash_attn"})
    assert _precision(**kwargs).attn_implementation == "sdpa", why


def test_an_explicit_attention_is_passed_through(installed):
    installed({"flash_attn"})
    assert _precision(attn_implementation="eager").load_kwargs("lora", TrainConfig().qlora, 0)["attn_implementation"] \
        == "eager"


def test_float32_on_cuda_turns_bf16_off():
    p = _precision(dtype="float32")
    assert p.dtype == "float32" and p.training_args("lora", TrainConfig().qlora)["bf16"] is False


def test_qlora_on_cuda_places_the_4bit_base_on_this_ranks_gpu_with_the_configured_settings():
    qlora = TrainConfig(qlora={"quant_type": "fp4", "double_quant": False}).qlora
    p = _precision("qlora", qlora=qlora.model_dump())
    kwargs = p.load_kwargs("qlora", qlora, local_rank=3)
    bnb = kwargs["quantization_config"]
    assert kwargs["device_map"] == {"": 3} and kwargs["dtype"] == torch.bfloat16
    assert bnb.load_in_4bit and bnb.bnb_4bit_quant_type == "fp4" and bnb.bnb_4bit_use_double_quant is False
    assert bnb.bnb_4bit_compute_dtype == torch.bfloat16
    assert p.training_args("qlora", qlora) == {"use_cpu": False, "bf16": True, "optim": "paged_adamw_32bit"}
    assert p.quantization == {"quant_type": "fp4", "double_quant": False, "compute_dtype": "bfloat16",
                              "optim": "paged_adamw_32bit"}


def test_qlora_on_cpu_loads_on_the_cpu_without_autocast_its_unquantised_weights_in_the_compute_dtype():
    p = _precision("qlora", on_cuda=False)
    kwargs = p.load_kwargs("qlora", TrainConfig().qlora, 0)
    # bf16 copies of the unquantised weights free the checkpoint's mapping (prepare_model_for_kbit_training
    # then casts them to fp32); the adapters train in fp32, with no autocast.
    assert kwargs["device_map"] == "cpu" and kwargs["dtype"] == torch.bfloat16 and kwargs["attn_implementation"] == "sdpa"
    assert p.training_args("qlora", TrainConfig().qlora) == {"use_cpu": True, "bf16": False,
                                                             "optim": "paged_adamw_32bit"}


def test_full_fine_tuning_keeps_fp32_master_weights_under_bf16_autocast():
    p = _precision("full")
    assert p.load_kwargs("full", TrainConfig().qlora, 0)["dtype"] == torch.float32
    assert p.training_args("full", TrainConfig().qlora)["bf16"] is True and p.dtype == "bfloat16"


def test_transformers_backend_resolves_its_dtype_on_the_device(monkeypatch, tmp_path):
    monkeypatch.setattr(device, "cuda_available", lambda: True)
    assert device.inference_device() == "cuda"
    assert TransformersBackend(tmp_path, 8).identity() == {"backend": "transformers", "batch_size": 8,
                                                          "dtype": "bfloat16"}
    assert TransformersBackend(tmp_path, 8, dtype="float32").identity()["dtype"] == "float32"
    monkeypatch.setattr(device, "cuda_available", lambda: False)
    assert TransformersBackend(tmp_path, 8).identity()["dtype"] == "float32"

"""Which device and dtype a model runs on here, and a description of that device for lineage and cost.

One place decides it, so training, the merge, the merge check and the
`transformers` eval backend agree: on a CUDA machine they all run on the GPU,
in bf16 when `model.dtype` is `auto`; on a CPU machine, on the CPU in fp32.
"""

from __future__ import annotations

import os
import platform
from typing import Literal

from pydantic import BaseModel

DtypeSetting = Literal["auto", "bfloat16", "float32"]


class DeviceInfo(BaseModel):
    """The hardware a step ran on, as lineage records it and the price table looks it up."""

    type: Literal["cpu", "cuda"]
    name: str  # the CPU model, or the GPU's name as torch reports it ("NVIDIA H100 80GB HBM3")
    count: int = 1  # GPUs (or CPU processes) used together

    def label(self) -> str:
        return f"{self.name} x{self.count}" if self.count > 1 else self.name


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def inference_device() -> str:
    """Where a model is run for generation, merging or checking: the GPU when there is one."""
    return "cuda" if cuda_available() else "cpu"


def resolve_dtype(setting: str = "auto", on_cuda: bool | None = None) -> str:
    """`auto` is bf16 on CUDA (half the memory of fp32, the dtype models are trained in) and fp32 on CPU."""
    if setting != "auto":
        return setting
    if on_cuda is None:
        on_cuda = cuda_available()
    return "bfloat16" if on_cuda else "float32"


def torch_dtype(name: str):
    import torch

    return {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}[name]


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def describe_device(processes: int | None = None) -> DeviceInfo:
    """This machine's training/inference device; `processes` data-parallel workers (default: WORLD_SIZE)."""
    count = processes if processes is not None else int(os.environ.get("WORLD_SIZE", "1"))
    if cuda_available():
        import torch

        return DeviceInfo(type="cuda", name=torch.cuda.get_device_name(0), count=count)
    return DeviceInfo(type="cpu", name=cpu_name(), count=count)


FLASH_KERNELS = (("flash_attn_interface", "flash_attention_3"), ("flash_attn", "flash_attention_2"))


def flash_attention_available() -> str | None:
    """The variable-length attention kernel that is installed (FlashAttention 3 before 2), or None."""
    import importlib.util

    return next((name for module, name in FLASH_KERNELS if importlib.util.find_spec(module) is not None), None)


def choose_attn_implementation(setting: str, on_cuda: bool, padding_free: bool, dtype: str) -> str:
    """`train.attn_implementation`: anything but auto is passed through to transformers as written.

    auto: a padding-free batch is one long row of several examples; on CUDA a flash kernel attends
    within each example only (variable length, from the position ids), where sdpa/eager pay for the
    whole row behind a block-diagonal mask. Flash kernels need 16-bit activations, so fp32 keeps sdpa.
    """
    if setting != "auto":
        return setting
    if on_cuda and padding_free and dtype in ("bfloat16", "float16"):
        return flash_attention_available() or "sdpa"
    return "sdpa"

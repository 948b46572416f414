"""The `vllm` eval backend: vLLM's offline engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finetune_pipeline.lib.evaluation.backend_errors import BackendError


def require_vllm() -> None:
    """Fail before loading anything: vLLM's offline engine needs CUDA."""
    import torch

    if not torch.cuda.is_available():
        raise BackendError("eval.backend 'vllm' needs a CUDA GPU and pip install '.[gpu]'; this machine has no "
                           "CUDA device. Use eval.backend: transformers (any machine) or openai (a server).")
    try:
        import vllm  # noqa: F401
    except ImportError as e:
        raise BackendError("eval.backend 'vllm' needs the vllm package: pip install '.[gpu]'") from e


class VllmBackend:
    name = "vllm"

    def __init__(self, model_dir: Path, gpu_memory_utilization: float, max_model_len: int, dtype: str):
        self.model_dir = Path(model_dir)
        self.options = {"gpu_memory_utilization": gpu_memory_utilization, "max_model_len": max_model_len,
                        "dtype": dtype}

    def identity(self) -> dict[str, Any]:
        return {"backend": self.name, "dtype": self.options["dtype"], "max_model_len": self.options["max_model_len"]}

    def generate(self, conversations, max_new_tokens):
        require_vllm()
        import gc

        import torch
        from vllm import LLM, SamplingParams

        llm = LLM(model=str(self.model_dir), seed=0, **self.options)
        try:
            # llm.chat applies the model's own chat template and batches internally.
            outputs = llm.chat([list(c) for c in conversations],
                               SamplingParams(temperature=0.0, max_tokens=max_new_tokens), use_tqdm=False)
            return [o.outputs[0].text.strip() for o in outputs]
        finally:
            del llm  # the engine holds most of the GPU; free it for the next version
            gc.collect()
            torch.cuda.empty_cache()

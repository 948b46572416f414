"""Eval backends: turn chat prompts into greedy completions for one model version.

- `transformers`: batched `generate` in this process (CPU or GPU), the default.
- `vllm`: offline `vllm.LLM` (CUDA GPU only, imported lazily).
- `openai`: any OpenAI-compatible chat endpoint (OpenAI, `vllm serve`,
  `transformers serve`), requests sent concurrently.

Each backend has an `identity`: what enters the `model_eval` recipe key, so a
report made by one backend is never mistaken for another's.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, Sequence
from urllib.parse import urlparse

from finetune_pipeline.lib.evaluation.config import EvalConfig

Conversation = Sequence[dict[str, str]]


class BackendError(RuntimeError):
    """A backend cannot run here or cannot reach its model; the message says what to do."""


class EvalBackend(Protocol):
    name: str

    def identity(self) -> dict[str, Any]: ...

    def generate(self, conversations: Sequence[Conversation], max_new_tokens: int) -> list[str]: ...


class TransformersBackend:
    name = "transformers"

    def __init__(self, model_dir: Path, batch_size: int):
        self.model_dir, self.batch_size = Path(model_dir), batch_size

    def identity(self) -> dict[str, Any]:
        # Batch size changes padding, which can change greedy output in the last bits.
        return {"backend": self.name, "batch_size": self.batch_size}

    def _loaded(self):
        # Loaded once: free and constrained generation share the model.
        if not hasattr(self, "_model"):
            from finetune_pipeline.lib.models.base_models import (
                load_model,
                load_tokenizer,
            )

            self._model, self._tokenizer = load_model(self.model_dir), load_tokenizer(self.model_dir)
        return self._model, self._tokenizer

    def generate(self, conversations, max_new_tokens):
        from finetune_pipeline.lib.evaluation.generate import generate_batched

        model, tokenizer = self._loaded()
        # Kept for generate_constrained on the same conversations (it reuses answers already in the label set).
        self._free = (list(conversations), [])
        return generate_batched(model, tokenizer, conversations, max_new_tokens=max_new_tokens,
                                batch_size=self.batch_size, token_ids=self._free[1])

    def generate_constrained(self, conversations, allowed_outputs, stats=None):
        """Greedy generation that can only produce one of `allowed_outputs` (see lib/evaluation/constrained.py)."""
        from finetune_pipeline.lib.evaluation.constrained import generate_constrained

        model, tokenizer = self._loaded()
        free = getattr(self, "_free", None)
        free_ids = free[1] if free and free[0] == list(conversations) and len(free[1]) == len(conversations) else None
        return generate_constrained(model, tokenizer, conversations, allowed_outputs, batch_size=self.batch_size,
                                    free_token_ids=free_ids, stats=stats)


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


class OpenAICompatibleBackend:
    name = "openai"

    def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY", concurrency: int = 4,
                 timeout_s: float = 120.0, max_retries: int = 3):
        self.base_url, self.model, self.api_key_env = base_url.rstrip("/"), model, api_key_env
        self.concurrency, self.timeout_s, self.max_retries = concurrency, timeout_s, max_retries

    def identity(self) -> dict[str, Any]:
        return {"backend": self.name, "base_url": self.base_url, "model": self.model}

    def generate(self, conversations, max_new_tokens):
        import openai

        # The key is read only now, so computing a recipe key never needs it.
        api_key = api_key_for(self.base_url, self.api_key_env)
        client = openai.OpenAI(base_url=self.base_url, api_key=api_key, timeout=self.timeout_s,
                               max_retries=self.max_retries)

        def one(conversation) -> str:
            try:
                response = client.chat.completions.create(
                    model=self.model, messages=list(conversation), temperature=0,
                    max_completion_tokens=max_new_tokens)
            except openai.APIConnectionError as e:
                raise BackendError(f"cannot reach the eval endpoint {self.base_url}: {e}") from e
            except openai.APIStatusError as e:
                raise BackendError(f"eval endpoint {self.base_url} refused model {self.model!r}: "
                                   f"HTTP {e.status_code} {e.message}") from e
            return (response.choices[0].message.content or "").strip()

        try:
            with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
                return list(pool.map(one, conversations))  # map keeps the input order
        finally:
            client.close()


def api_key_for(base_url: str, env_name: str) -> str:
    """The key from the environment; local servers (vllm/transformers serve) need none."""
    key = os.environ.get(env_name)
    if key:
        return key
    host = urlparse(base_url).hostname or ""
    if host.endswith("openai.com"):
        raise BackendError(f"evaluating at {base_url} needs an API key in ${env_name}")
    return "not-needed"  # the client insists on a non-empty key


def backend_for(e: EvalConfig, key: str, weights: Path | None = None, remote_id: str | None = None) -> EvalBackend:
    """The backend for one model: a remote id goes to the endpoint, local weights through e.backend.

    `key` is the model version's key, the name `vllm serve --served-model-name` gives it.
    """
    if remote_id:
        return _openai(e, remote_id)
    if weights is None:
        raise BackendError(f"model version {key!r} has no local weights and no remote id to evaluate")
    if e.backend == "transformers":
        return TransformersBackend(Path(weights), e.batch_size)
    if e.backend == "vllm":
        return VllmBackend(Path(weights), e.vllm.gpu_memory_utilization, e.vllm.max_model_len, e.vllm.dtype)
    if e.backend == "openai":
        return _openai(e, e.openai.model_name.replace("{key}", key).replace("{path}", str(weights)))
    raise BackendError(f"unknown eval.backend {e.backend!r}")


def _openai(e: EvalConfig, model: str) -> OpenAICompatibleBackend:
    o = e.openai
    return OpenAICompatibleBackend(o.base_url, model, api_key_env=o.api_key_env, concurrency=o.concurrency,
                                   timeout_s=o.timeout_s, max_retries=o.max_retries)

"""Eval backends: turn chat prompts into greedy completions for one model version.

- `transformers`: batched `generate` in this process (CPU or GPU), the default.
- `vllm`: offline `vllm.LLM` (CPU or GPU) in a child process of the serving
  environment (`scripts/setup.sh serve`), started once per version.
- `openai`: any OpenAI-compatible chat endpoint (OpenAI, `vllm serve`,
  `transformers serve`), requests sent concurrently.

Each backend has an `identity`: what enters the `model_eval` recipe key, so a
report made by one backend is never mistaken for another's. Each backend is
one file: transformers_backend.py, vllm_backend.py, openai_backend.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, Sequence

from finetune_pipeline.lib.evaluation.backend_errors import BackendError
from finetune_pipeline.lib.evaluation.config import EvalConfig
from finetune_pipeline.lib.evaluation.openai_backend import OpenAICompatibleBackend, api_key_for
from finetune_pipeline.lib.evaluation.transformers_backend import TransformersBackend
from finetune_pipeline.lib.evaluation.vllm_backend import VllmBackend

Conversation = Sequence[dict[str, str]]


__all__ = ["BackendError", "Conversation", "EvalBackend", "OpenAICompatibleBackend", "TransformersBackend",
           "VllmBackend", "api_key_for", "backend_for", "close_backend"]


class EvalBackend(Protocol):
    name: str

    def identity(self) -> dict[str, Any]: ...

    def generate(self, conversations: Sequence[Conversation], max_new_tokens: int) -> list[str]: ...


def close_backend(backend: EvalBackend) -> None:
    """Free what a backend holds between calls (the vllm backend's child process); others hold nothing to free."""
    close = getattr(backend, "close", None)
    if close is not None:
        close()


def backend_for(e: EvalConfig, key: str, weights: Path | None = None, remote_id: str | None = None,
                dtype: str = "auto") -> EvalBackend:
    """The backend for one model: a remote id goes to the endpoint, local weights through e.backend.

    `key` is the model version's key, the name `--served-model-name` gives it in the serving spec;
    `dtype` is model.dtype, what the transformers backend loads the weights in unless eval.dtype names another.
    """
    if remote_id:
        return _openai(e, remote_id)
    if weights is None:
        raise BackendError(f"model version {key!r} has no local weights and no remote id to evaluate")
    if e.backend == "transformers":
        return TransformersBackend(Path(weights), e.batch_size, dtype=dtype if e.dtype == "model" else e.dtype)
    if e.backend == "vllm":
        return VllmBackend(Path(weights), e.vllm)
    if e.backend == "openai":
        return _openai(e, e.openai.model_name.replace("{key}", key).replace("{path}", str(weights)))
    raise BackendError(f"unknown eval.backend {e.backend!r}")


def _openai(e: EvalConfig, model: str) -> OpenAICompatibleBackend:
    o = e.openai
    return OpenAICompatibleBackend(o.base_url, model, api_key_env=o.api_key_env, concurrency=o.concurrency,
                                   timeout_s=o.timeout_s, max_retries=o.max_retries)

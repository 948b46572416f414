"""The `openai` eval backend: any OpenAI-compatible chat endpoint (OpenAI, vLLM's server,
`transformers serve`), requests sent concurrently."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlparse

from finetune_pipeline.lib.evaluation.backend_errors import BackendError


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
            usage = response.usage  # what the endpoint bills: the eval's token counts and API cost come from it
            tokens = (usage.prompt_tokens, usage.completion_tokens) if usage is not None else None
            return (response.choices[0].message.content or "").strip(), tokens

        try:
            with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
                answers = list(pool.map(one, conversations))  # map keeps the input order
        finally:
            client.close()
        # (prompt, completion) tokens of each request of the last call, when the endpoint reported them all.
        usage = [tokens for _, tokens in answers]
        self.usage = usage if all(u is not None for u in usage) else []
        return [text for text, _ in answers]


def api_key_for(base_url: str, env_name: str) -> str:
    """The key from the environment; local servers (vllm/transformers serve) need none."""
    key = os.environ.get(env_name)
    if key:
        return key
    host = urlparse(base_url).hostname or ""
    if host.endswith("openai.com"):
        raise BackendError(f"evaluating at {base_url} needs an API key in ${env_name}")
    return "not-needed"  # the client insists on a non-empty key

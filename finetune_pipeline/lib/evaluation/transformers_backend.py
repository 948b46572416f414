"""The `transformers` eval backend: batched greedy `generate` in this process (CPU or GPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class TransformersBackend:
    name = "transformers"

    def __init__(self, model_dir: Path, batch_size: int, dtype: str = "auto"):
        from finetune_pipeline.lib.models.device import resolve_dtype

        self.model_dir, self.batch_size = Path(model_dir), batch_size
        self.dtype = resolve_dtype(dtype)  # model.dtype: auto is bf16 on a CUDA GPU, fp32 on CPU

    def identity(self) -> dict[str, Any]:
        # Batch size changes padding, and the dtype rounding, either of which can change greedy output.
        return {"backend": self.name, "batch_size": self.batch_size, "dtype": self.dtype}

    def _loaded(self):
        # Loaded once: free and constrained generation share the model.
        if not hasattr(self, "_model"):
            from finetune_pipeline.lib.models.base_models import (
                load_for_inference,
                load_tokenizer,
            )

            self._model = load_for_inference(self.model_dir, self.dtype)
            self._tokenizer = load_tokenizer(self.model_dir)
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

    def rank_labels(self, conversations, field, labels, k):
        """Each conversation's k most likely labels, best first (see lib/evaluation/likelihood.py)."""
        from finetune_pipeline.lib.evaluation.classification import allowed_outputs
        from finetune_pipeline.lib.evaluation.likelihood import top_labels

        model, tokenizer = self._loaded()
        return [[labels[j] for j in top] for top in
                top_labels(model, tokenizer, conversations, allowed_outputs(field, labels), k)]

"""What every stage shares: the artifact store of a config, and the log callable."""

from __future__ import annotations

from typing import Callable

from finetune_pipeline.lib import stores
from finetune_pipeline.lib.config import PipelineConfig
from finetune_pipeline.lib.storage.artifacts import ArtifactStore

Log = Callable[[str], None]


def store(cfg: PipelineConfig) -> ArtifactStore:
    return stores.artifact_store(cfg)

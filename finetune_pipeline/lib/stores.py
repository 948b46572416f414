"""Where one config's artifacts, model versions and promotion state live: a folder, or a bucket plus a mirror.

Every stage gets its stores from here, so `artifacts_root: s3://...` in the
config is the only change needed to put the whole record on object storage.
"""

from __future__ import annotations

from finetune_pipeline.lib.config import PipelineConfig
from finetune_pipeline.lib.storage.artifacts import ArtifactStore
from finetune_pipeline.lib.storage.object_store import RemoteArtifacts, remote_for
from finetune_pipeline.lib.versions.promotion import PromotionStore
from finetune_pipeline.lib.versions.registry import Registry


def remote_of(cfg: PipelineConfig) -> RemoteArtifacts | None:
    if cfg.artifacts_url is None:
        return None
    return remote_for(cfg.artifacts_url, cfg.artifacts_dir, cfg.artifacts_storage_options)


def artifact_store(cfg: PipelineConfig) -> ArtifactStore:
    return ArtifactStore(cfg.artifacts_dir, remote_of(cfg))


def registry(cfg: PipelineConfig) -> Registry:
    return Registry(cfg.artifacts_dir, remote_of(cfg))


def promotion_store(cfg: PipelineConfig) -> PromotionStore:
    return PromotionStore(cfg.artifacts_dir, remote_of(cfg))

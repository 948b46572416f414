"""What every stage shares: the stores a config names, and the one way an artifact is built.

`build_artifact` is the only place that turns a recipe into an artifact:
recipe key (the recipe plus the stage's code version from `CODE_VERSIONS`) ->
reuse the artifact if that key exists (a cache hit) -> otherwise build it in a
temporary folder -> lineage.json -> publish (rename, or upload to the bucket).
A stage is its inputs, its recipe and its build function.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence

from finetune_pipeline.lib.config import PipelineConfig
from finetune_pipeline.lib.stages.code_versions import CODE_VERSIONS
from finetune_pipeline.lib.storage.artifacts import ArtifactRef, ArtifactStore
from finetune_pipeline.lib.storage.hashing import recipe_key
from finetune_pipeline.lib.storage.object_store import RemoteArtifacts
from finetune_pipeline.lib.versions.promotion import PromotionStore
from finetune_pipeline.lib.versions.registry import Registry

log = logging.getLogger(__name__)

# What a build function gets: the temporary folder to write into. It returns the artifact's info
# (counts, metrics: what lineage.json and the asset's metadata show).
Build = Callable[[Path], dict[str, Any] | None]


def remote(cfg: PipelineConfig) -> RemoteArtifacts | None:
    if cfg.artifacts_url is None:
        return None
    return RemoteArtifacts(cfg.artifacts_url, cfg.artifacts_dir, cfg.artifacts_storage_options)


def store(cfg: PipelineConfig) -> ArtifactStore:
    """Where this config's artifacts live: a folder, or a bucket and this machine's mirror of it."""
    return ArtifactStore(cfg.artifacts_dir, remote(cfg))


def registry(cfg: PipelineConfig) -> Registry:
    return Registry(cfg.artifacts_dir, remote(cfg))


def promotion_store(cfg: PipelineConfig) -> PromotionStore:
    return PromotionStore(cfg.artifacts_dir, remote(cfg))


def artifact_key(asset: str, recipe: dict[str, Any]) -> str:
    """The key of `asset`'s artifact for this recipe: its hash with the stage's code version."""
    return recipe_key({**recipe, "code": CODE_VERSIONS[asset]})


def build_artifact(cfg: PipelineConfig, asset: str, build: Build, *, recipe: dict[str, Any] | None = None,
                   key: str | None = None, inputs: Sequence[ArtifactRef | dict[str, Any]] = (),
                   config: dict[str, Any] | None = None, unchanged: str = "", run_id: str | None = None
                   ) -> ArtifactRef:
    """The artifact of `asset` for this recipe: found, or built by `build` and published.

    `key` overrides the recipe's hash (the eval set is keyed by its content). `unchanged` says,
    for the log line of a cache hit, what was found unchanged ("raw files").
    """
    code = CODE_VERSIONS[asset]
    key = key or artifact_key(asset, recipe or {})
    artifacts = store(cfg)
    if hit := artifacts.find(asset, key):
        log.info("cache hit: %sreusing %s/%s", f"{unchanged}, " if unchanged else "", asset, key)
        return hit
    with artifacts.write(asset, key, inputs=[i.as_input() if isinstance(i, ArtifactRef) else i for i in inputs],
                         config=config or {}, code_version=code, run_id=run_id) as out:
        out.info.update(build(out.dir) or {})
    return out.ref

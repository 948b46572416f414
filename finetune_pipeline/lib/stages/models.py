"""Model stages: the base model as local safetensors, and base + adapter merged. Both are model versions."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from finetune_pipeline.lib.config import PipelineConfig
from finetune_pipeline.lib.models.base_models import resolve_base_model
from finetune_pipeline.lib.models.merge import merge_adapter
from finetune_pipeline.lib.stages.common import build_artifact, registry, store
from finetune_pipeline.lib.storage.artifacts import ArtifactRef
from finetune_pipeline.lib.versions.version import ArtifactAddress, base_key, full_key, lora_key, weights_folder

log = logging.getLogger(__name__)
WEIGHTS_IN_ARTIFACT = "model"  # with artifacts on object storage, the base model's weights travel in its artifact


def base_model_dir(base: ArtifactRef, pull: bool = True) -> Path:
    """The base model's weights folder: in the model cache, or in the artifact (pulled if this machine lacks it)."""
    return weights_folder(_base_weights(base), base.store(), ArtifactAddress(asset=base.asset, key=base.key), pull)


def _base_weights(base: ArtifactRef) -> str:
    # Base artifacts made before `weights` was recorded name their folder in `model_dir`.
    return base.info.get("weights") or base.info["model_dir"]


def base_model(cfg: PipelineConfig, run_id: str | None = None) -> ArtifactRef:
    """Resolve the base model to local safetensors and register it as a version (the prompting baseline)."""
    model = resolve_base_model(cfg.model.base_model, cfg.model_cache_dir)
    artifacts = store(cfg)

    def build(out: Path) -> dict:
        weights = str(model.path)
        if artifacts.remote is not None:
            # The model cache is this machine's; with artifacts on object storage the weights travel
            # in the artifact, so a pod that never converted or downloaded the model can pull them.
            shutil.copytree(model.path, out / WEIGHTS_IN_ARTIFACT)
            weights = WEIGHTS_IN_ARTIFACT
        (out / "model_ref.json").write_text(json.dumps({"weights": weights}) + "\n")
        info = {"spec": model.spec, "weights": weights, "content_hash": model.content_hash,
                "version_key": base_key(model.slug)}
        return {**info, "model_dir": weights} if artifacts.remote is None else info

    ref = build_artifact(cfg, "base_model", build, recipe={"spec": model.spec, "content": model.content_hash},
                         inputs=[{"asset": "base model", **model.source}], config=cfg.section("model"),
                         unchanged="base model unchanged", run_id=run_id)
    registry(cfg).register(ref.info["version_key"], "base", weights=_base_weights(ref),
                           artifact=ArtifactAddress(asset=ref.asset, key=ref.key), info={"spec": model.spec})
    return ref


def merged_model(cfg: PipelineConfig, base: ArtifactRef, adapter: ArtifactRef, run_id: str | None = None
                 ) -> ArtifactRef:
    """merge_and_unload of base + adapter: a plain transformers model that vLLM loads too; a model version.

    A full fine-tune (train.method: full) has no adapter: see `full_model`.
    """
    if is_full_fine_tune(adapter):
        return full_model(cfg, base, adapter, run_id)

    def build(out: Path) -> dict:
        # Saved in the dtype the adapter was trained in (older lineage has none: the default here).
        merge_adapter(base_model_dir(base), adapter.dir, out, dtype=adapter.info.get("dtype"))
        return {"version_key": lora_key(adapter.key)}

    ref = build_artifact(cfg, "merged_model", build, recipe={"base": base.key, "adapter": adapter.key},
                         inputs=[base, adapter], run_id=run_id)
    registry(cfg).register(ref.info["version_key"], "lora_merged", weights=".",
                           artifact=ArtifactAddress(asset=ref.asset, key=ref.key),
                           info={"adapter": adapter.key, "base": base.info["spec"]})
    return ref


def is_full_fine_tune(trained: ArtifactRef) -> bool:
    """The training artifact holds a whole model (train.method: full), not an adapter to merge."""
    return trained.info.get("method") == "full"


def full_model(cfg: PipelineConfig, base: ArtifactRef, trained: ArtifactRef, run_id: str | None = None
               ) -> ArtifactRef:
    """A full fine-tune as a model version (kind `full`), without a merge and without copying its weights.

    The version's artifact is the training artifact itself (a whole model, loadable as it is). The
    merged_model artifact is only a small record, model_ref.json naming that artifact: so merged_model
    still materializes for every training (the graph, jobs and callers read its version_key) while a
    model of several GB is stored once.
    """
    key = full_key(trained.key)
    model = {"asset": trained.asset, "key": trained.key}

    def build(out: Path) -> dict:
        (out / "model_ref.json").write_text(json.dumps({"model": model}) + "\n")
        log.info("full fine-tune: no merge; model version %s is %s/%s", key, trained.asset, trained.key)
        return {"version_key": key, "method": "full", "model": model}

    ref = build_artifact(cfg, "merged_model", build, recipe={"base": base.key, "adapter": trained.key},
                         inputs=[base, trained], unchanged="full fine-tune already registered", run_id=run_id)
    registry(cfg).register(key, "full", weights=".", artifact=ArtifactAddress(**model),
                           info={"trained": trained.key, "base": base.info["spec"]})
    return ref

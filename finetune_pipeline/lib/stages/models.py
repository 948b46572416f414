"""Model stages: the base model as local safetensors, and base + adapter merged; both are model versions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from finetune_pipeline.lib import stores as storage
from finetune_pipeline.lib.config import PipelineConfig
from finetune_pipeline.lib.models.base_models import resolve_base_model
from finetune_pipeline.lib.models.merge import merge_adapter
from finetune_pipeline.lib.stages.code_versions import CODE_VERSIONS
from finetune_pipeline.lib.stages.common import Log
from finetune_pipeline.lib.stages.common import store as _store
from finetune_pipeline.lib.storage.artifacts import ArtifactRef
from finetune_pipeline.lib.storage.hashing import recipe_key
from finetune_pipeline.lib.versions.registry import base_key, lora_key


def base_model_dir(base: ArtifactRef) -> Path:
    """The base model's weights folder (inside the artifact when artifacts are on object storage: pulled)."""
    return Path(base.ensure_local().info["model_dir"])


def base_model(cfg: PipelineConfig, run_id: str | None = None, log: Log = print) -> ArtifactRef:
    """Resolve the base model to local safetensors and register it as a version."""
    model = resolve_base_model(cfg.model.base_model, cfg.model_cache_dir)
    recipe = {"spec": model.spec, "content": model.content_hash, "code": CODE_VERSIONS["base_model"]}
    key = recipe_key(recipe)
    store = _store(cfg)
    ref = store.find("base_model", key)
    if ref is None:
        with store.write("base_model", key, inputs=[{"asset": "base model", **model.source}],
                         config=cfg.section("model"), code_version=CODE_VERSIONS["base_model"], run_id=run_id) as out:
            model_dir = model.path
            if store.remote is not None:
                # The model cache is this machine's; with artifacts on object storage the weights travel
                # in the artifact, so a pod that never converted or downloaded the model can pull them.
                shutil.copytree(model.path, out.dir / "model")
                model_dir = store.dir("base_model", key) / "model"
            out.info.update(spec=model.spec, model_dir=str(model_dir), content_hash=model.content_hash,
                            version_key=base_key(model.slug))
            (out.dir / "model_ref.json").write_text(json.dumps({"model_dir": str(model_dir)}) + "\n")
        ref = out.ref
    else:
        log(f"cache hit: base model unchanged, reusing base_model/{key}")
    storage.registry(cfg).register(ref.info["version_key"], "base", path=ref.info["model_dir"],
                                         lineage=ref.path, info={"spec": model.spec})
    return ref


def merged_model(cfg: PipelineConfig, base: ArtifactRef, adapter: ArtifactRef, run_id: str | None = None,
                 log: Log = print) -> ArtifactRef:
    recipe = {"base": base.key, "adapter": adapter.key, "code": CODE_VERSIONS["merged_model"]}
    key = recipe_key(recipe)
    store = _store(cfg)
    ref = store.find("merged_model", key)
    if ref is None:
        with store.write("merged_model", key, inputs=[base.as_input(), adapter.as_input()], config={},
                         code_version=CODE_VERSIONS["merged_model"], run_id=run_id) as out:
            merge_adapter(base_model_dir(base), adapter.dir, out.dir)
            out.info.update(version_key=lora_key(adapter.key))
        ref = out.ref
    else:
        log(f"cache hit: reusing merged_model/{key}")
    storage.registry(cfg).register(ref.info["version_key"], "lora_merged", path=ref.path, lineage=ref.path,
                                         info={"adapter": adapter.path, "base": base.info["spec"]})
    return ref

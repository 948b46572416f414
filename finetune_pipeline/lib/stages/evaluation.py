"""The evaluation stage: one model version on the eval set, scored the same way for every backend."""

from __future__ import annotations

from typing import Any

from finetune_pipeline.lib import stores as storage
from finetune_pipeline.lib.config import PipelineConfig
from finetune_pipeline.lib.data.cleaning import read_split
from finetune_pipeline.lib.evaluation.backends import EvalBackend, backend_for
from finetune_pipeline.lib.evaluation.classification import load_labels
from finetune_pipeline.lib.evaluation.evaluate import ClassificationSettings, EvalSettings, EvalSubject, evaluate
from finetune_pipeline.lib.stages.code_versions import CODE_VERSIONS
from finetune_pipeline.lib.stages.common import Log
from finetune_pipeline.lib.stages.common import store as _store
from finetune_pipeline.lib.storage.artifacts import ArtifactRef
from finetune_pipeline.lib.storage.hashing import hash_file, recipe_key


def _model_eval_recipe(cfg: PipelineConfig, manifest: dict[str, Any], backend: EvalBackend,
                       eval_set_ref: ArtifactRef) -> dict[str, Any]:
    version_input = {"asset": "model_version", "key": manifest["key"], "path": manifest["lineage"] or manifest["path"]}
    if manifest.get("remote_id"):
        version_input["remote_id"] = manifest["remote_id"]
    recipe = {"version": version_input, "eval_set": eval_set_ref.key, "backend": backend.identity(),
              "generation": {"max_new_tokens": cfg.eval.max_new_tokens, "limit": cfg.eval.limit},
              "code": CODE_VERSIONS["model_eval"]}
    c = cfg.eval.classification
    if c.field:
        # The label set's content, not the file's name, decides the scores.
        recipe["classification"] = {"field": c.field, "constrained": c.constrained,
                                    "labels": hash_file(cfg.path(c.labels_file)) if c.labels_file else "train split"}
    return recipe


def model_eval_key(cfg: PipelineConfig, version_key: str, eval_set_ref: ArtifactRef) -> str:
    """The model_eval artifact key the current config gives this version on this eval set."""
    manifest = storage.registry(cfg).get(version_key)
    return recipe_key(_model_eval_recipe(cfg, manifest, backend_for(cfg, manifest), eval_set_ref))


def model_eval(cfg: PipelineConfig, version_key: str, eval_set_ref: ArtifactRef, run_id: str | None = None,
               log: Log = print) -> ArtifactRef:
    """Evaluate the named version (never "the latest") on the eval set.

    The backend follows the version's kind: OpenAI models through the
    OpenAI-compatible endpoint by their remote id, local ones through
    eval.backend (transformers, vllm, or a server speaking the OpenAI API).
    """
    manifest = storage.registry(cfg).get(version_key)
    backend = backend_for(cfg, manifest)
    recipe = _model_eval_recipe(cfg, manifest, backend, eval_set_ref)
    key = recipe_key(recipe)
    store = _store(cfg)
    if hit := store.find("model_eval", key):
        log(f"cache hit: {version_key} already evaluated on eval set {eval_set_ref.key} with {backend.name}")
        return hit
    storage.registry(cfg).ensure_local(manifest)  # the version's weights, on a machine that has not got them
    test_file = eval_set_ref.dir / "test.jsonl"
    records = read_split(test_file)
    if cfg.eval.limit:
        records = records[: cfg.eval.limit]
    if not records:
        raise ValueError(f"{test_file}: the test split is empty; nothing to evaluate")
    log(f"model_eval[{version_key}]: {len(records)} rows through {backend.identity()}")
    settings = EvalSettings(max_new_tokens=cfg.eval.max_new_tokens, classification=_classification(cfg, eval_set_ref))
    subject = EvalSubject(version=version_key, kind=manifest["kind"], eval_set=eval_set_ref.key,
                          test_file=str(test_file))
    report = evaluate(backend, records, settings, subject)
    with store.write("model_eval", key, inputs=[recipe["version"], eval_set_ref.as_input()],
                     config={**recipe["generation"], "backend": recipe["backend"],
                             "classification": recipe.get("classification")},
                     code_version=CODE_VERSIONS["model_eval"], run_id=run_id) as out:
        report.save(out.dir)
        out.info.update(report.to_json())
    log(f"model_eval[{version_key}]: {report.metrics} in {report.eval_seconds:.1f}s")
    return out.ref


def _classification(cfg: PipelineConfig, eval_set_ref: ArtifactRef) -> ClassificationSettings | None:
    """eval.classification with its label set loaded: from labels_file, else the training split's labels."""
    c = cfg.eval.classification
    if not c.field:
        return None
    train_records: list[dict[str, Any]] = []
    if not c.labels_file:
        dataset = _store(cfg).find("training_dataset", eval_set_ref.info["dataset"])
        if dataset is None:
            raise FileNotFoundError(f"eval.classification: the labels come from the training split, but dataset "
                                    f"{eval_set_ref.info['dataset']} is gone; set eval.classification.labels_file")
        train_records = read_split(dataset.dir / "train.jsonl")
    labels = load_labels(cfg.path(c.labels_file) if c.labels_file else None, train_records, c.field)
    return ClassificationSettings(field=c.field, labels=labels, constrained=c.constrained)


def sample_val_prompts(dataset: ArtifactRef, n: int = 3) -> list[list[dict[str, str]]]:
    records = read_split(dataset.dir / "val.jsonl") or read_split(dataset.dir / "train.jsonl")
    return [r["messages"] for r in records[:n]]

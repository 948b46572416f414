"""The evaluation stage: one model version on the eval set, scored the same way for every backend."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

from finetune_pipeline.lib.config import PipelineConfig
from finetune_pipeline.lib.data.cleaning import read_split
from finetune_pipeline.lib.evaluation.backends import EvalBackend, close_backend
from finetune_pipeline.lib.evaluation.backends import backend_for as make_backend
from finetune_pipeline.lib.evaluation.classification import load_labels
from finetune_pipeline.lib.evaluation.evaluate import ClassificationSettings, EvalSettings, EvalSubject, evaluate
from finetune_pipeline.lib.stages.common import artifact_key, build_artifact, registry, store
from finetune_pipeline.lib.storage.artifacts import ArtifactRef, ArtifactStore
from finetune_pipeline.lib.storage.hashing import hash_file
from finetune_pipeline.lib.versions import kinds
from finetune_pipeline.lib.versions.version import ModelVersion

log = logging.getLogger(__name__)


def answering_version(cfg: PipelineConfig, version: ModelVersion) -> ModelVersion:
    """The version whose weights (or remote id) answer for `version`: itself, or a prompted baseline's model."""
    seen = {version.key}
    while (other := kinds.get(version.kind).answered_by(version)) is not None:
        if other in seen:
            raise ValueError(f"model version {other!r} prompts itself through {sorted(seen)}")
        seen.add(other)
        version = registry(cfg).get(other)
    return version


def is_remote(version: ModelVersion) -> bool:
    """Answered through an endpoint by its remote id (an OpenAI model, an API baseline), not from local weights."""
    return kinds.get(version.kind).remote or bool(version.remote_id)


def backend_for(cfg: PipelineConfig, version: ModelVersion, artifacts: ArtifactStore | None = None) -> EvalBackend:
    """How this version is run: a remote kind by its remote id at the endpoint, local weights through eval.backend.

    Nothing is pulled here (the leaderboard computes every version's eval key); `model_eval` pulls the
    weights before it generates. A prompting baseline runs on the weights of the version it prompts.
    """
    version = answering_version(cfg, version)
    if is_remote(version):
        return make_backend(cfg.eval, version.key, remote_id=version.remote_id or "")
    return make_backend(cfg.eval, version.key, weights=version.weights_dir(artifacts or store(cfg), pull=False),
                        dtype=cfg.model.dtype)


def _recipe(cfg: PipelineConfig, version: ModelVersion, backend: EvalBackend, eval_set_ref: ArtifactRef
            ) -> dict[str, Any]:
    # The version by what makes it: the artifact that produced it, its weights outside the store, its remote id.
    version_input = {"asset": "model_version", "key": version.key}
    if version.artifact:
        version_input["artifact"] = f"{version.artifact.asset}/{version.artifact.key}"
    if version.weights and Path(version.weights).is_absolute():
        version_input["weights"] = version.weights
    if version.remote_id:
        version_input["remote_id"] = version.remote_id
    answering = answering_version(cfg, version)
    if answering.key != version.key:  # a prompting baseline: the model it prompts is an input too
        version_input["answered_by"] = answering.key
        if answering.artifact:
            version_input["answering_artifact"] = f"{answering.artifact.asset}/{answering.artifact.key}"
    recipe = {"version": version_input, "eval_set": eval_set_ref.key, "backend": backend.identity(),
              "generation": {"max_new_tokens": cfg.eval.max_new_tokens, "limit": cfg.eval.limit, "sample": cfg.eval.sample,
                             "latency_requests": cfg.eval.latency_requests, "resamples": cfg.eval.resamples}}
    c = cfg.eval.classification
    if c.field:
        # The label set's content, not the file's name, decides the scores.
        recipe["classification"] = {"field": c.field, "scoring": c.passes(),
                                    "labels": hash_file(cfg.path(c.labels_file)) if c.labels_file else "train split"}
        if c.answers != "free":  # only when set, so evals made before the setting existed keep their keys
            recipe["classification"]["answers"] = c.answers
    return recipe


def model_eval_key(cfg: PipelineConfig, version_key: str, eval_set_ref: ArtifactRef) -> str:
    """The model_eval artifact key the current config gives this version on this eval set."""
    version = registry(cfg).get(version_key)
    return artifact_key("model_eval", _recipe(cfg, version, backend_for(cfg, version), eval_set_ref))


def model_eval(cfg: PipelineConfig, version_key: str, eval_set_ref: ArtifactRef, run_id: str | None = None
               ) -> ArtifactRef:
    """Evaluate the named version (never "the latest") on the eval set.

    The backend follows the version's kind: OpenAI models through the
    OpenAI-compatible endpoint by their remote id, local ones through
    eval.backend (transformers, vllm, or a server speaking the OpenAI API).
    """
    artifacts = store(cfg)
    version = registry(cfg).get(version_key)
    backend = backend_for(cfg, version, artifacts)
    recipe = _recipe(cfg, version, backend, eval_set_ref)

    def build(out: Path) -> dict:
        answering_version(cfg, version).weights_dir(artifacts)  # pulls the weights onto a machine that lacks them
        return _evaluate(cfg, version, backend, eval_set_ref, out)

    return build_artifact(cfg, "model_eval", build, recipe=recipe, inputs=[recipe["version"], eval_set_ref],
                          config={**recipe["generation"], "backend": recipe["backend"],
                                  "classification": recipe.get("classification")},
                          unchanged=f"{version_key} already evaluated on eval set {eval_set_ref.key} "
                                    f"with {backend.name}", run_id=run_id)


def eval_inputs(cfg: PipelineConfig, eval_set_ref: ArtifactRef) -> tuple[list[dict[str, Any]], EvalSettings]:
    """The eval set's rows (eval.limit applied) and how they are generated and scored, as model_eval does."""
    test_file = eval_set_ref.dir / "test.jsonl"
    records = read_split(test_file)
    if cfg.eval.limit:
        records = records[: cfg.eval.limit]
    if cfg.eval.sample and cfg.eval.sample < len(records):
        keep = sorted(random.Random(0).sample(range(len(records)), cfg.eval.sample))  # test-file order kept
        records = [records[i] for i in keep]
    if not records:
        raise ValueError(f"{test_file}: the test split is empty; nothing to evaluate")
    return records, EvalSettings(max_new_tokens=cfg.eval.max_new_tokens,
                                 classification=_classification(cfg, eval_set_ref),
                                 latency_requests=cfg.eval.latency_requests, resamples=cfg.eval.resamples)


def _evaluate(cfg: PipelineConfig, version: ModelVersion, backend: EvalBackend, eval_set_ref: ArtifactRef,
              out: Path) -> dict[str, Any]:
    """Generate, score and write report.json and predictions.jsonl into `out`; the report is the artifact's info."""
    version_key = version.key
    records, settings = eval_inputs(cfg, eval_set_ref)
    recipe = kinds.get(version.kind).prompt_recipe(version, store(cfg))
    if recipe is not None:
        settings = settings.model_copy(update={"prompt": recipe, "prompt_key": version.artifact.key})
        log.info("model_eval[%s]: %d shots in every prompt%s", version_key, len(recipe.shots),
                 f", answers constrained to {recipe.constraint} ({len(recipe.allowed_outputs)} allowed)"
                 if recipe.constraint else "")
    log.info("model_eval[%s]: %d rows through %s", version_key, len(records), backend.identity())
    subject = EvalSubject(version=version_key, kind=version.kind, eval_set=eval_set_ref.key,
                          test_file=str(eval_set_ref.dir / "test.jsonl"))
    try:
        report = evaluate(backend, records, settings, subject)
    finally:
        close_backend(backend)  # the vllm backend's engine holds GBs until closed
    report.save(out)
    log.info("model_eval[%s]: %s in %.1fs", version_key, report.metrics, report.eval_seconds)
    return report.to_json()


def _classification(cfg: PipelineConfig, eval_set_ref: ArtifactRef) -> ClassificationSettings | None:
    """eval.classification with its label set loaded: from labels_file, else the training split's labels."""
    c = cfg.eval.classification
    if not c.field:
        return None
    dataset_dir = None
    if not c.labels_file:
        dataset = store(cfg).find("training_dataset", eval_set_ref.info["dataset"])
        if dataset is None:
            raise FileNotFoundError(f"eval.classification: the labels come from the training split, but dataset "
                                    f"{eval_set_ref.info['dataset']} is gone; set eval.classification.labels_file")
        dataset_dir = dataset.dir
    labels = classification_labels(cfg, dataset_dir)
    passes = c.passes()
    return ClassificationSettings(field=c.field, labels=labels, constrained="constrained" in passes,
                                  likelihood="likelihood" in passes, answers=c.answers)


def classification_labels(cfg: PipelineConfig, dataset_dir: Path | None) -> list[str]:
    """eval.classification's label set: labels_file, else the labels of `dataset_dir`'s training split."""
    c = cfg.eval.classification
    train = [] if c.labels_file else read_split(dataset_dir / "train.jsonl")
    return load_labels(cfg.path(c.labels_file) if c.labels_file else None, train, c.field)


def sample_val_prompts(dataset: ArtifactRef, n: int = 3) -> list[list[dict[str, str]]]:
    records = read_split(dataset.dir / "val.jsonl") or read_split(dataset.dir / "train.jsonl")
    return [r["messages"] for r in records[:n]]

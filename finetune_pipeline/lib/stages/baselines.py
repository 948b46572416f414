"""The prompting baselines stage: each `baselines:` entry as a prompt_recipe artifact and a model version.

A baseline is a model as it is (the base model, another registered version, or an API model) with a prompt
recipe: k training rows shown as earlier turns and, optionally, the answer constrained to the task's JSON
shape or to the label set. The recipe (the very rows shown, the allowed answers) is the artifact's content,
so it is in the version's key and its lineage; shots come from the training split only, never val or test.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

from finetune_pipeline.lib.config import PipelineConfig
from finetune_pipeline.lib.data.cleaning import read_split
from finetune_pipeline.lib.data.json_output import parse_json_object
from finetune_pipeline.lib.evaluation.classification import allowed_outputs, load_labels
from finetune_pipeline.lib.evaluation.prompt_recipe import PromptRecipe, draw_shots, json_shape_outputs
from finetune_pipeline.lib.stages.common import build_artifact, registry
from finetune_pipeline.lib.storage.artifacts import ArtifactRef
from finetune_pipeline.lib.versions.config import BaselineConfig
from finetune_pipeline.lib.versions.version import ArtifactAddress, check_key

log = logging.getLogger(__name__)


def prompt_baselines(cfg: PipelineConfig, base: ArtifactRef, dataset: ArtifactRef, run_id: str | None = None
                     ) -> list[str]:
    """Build (or reuse) each configured baseline's recipe and register it; returns the version keys."""
    if not cfg.baselines:
        return []
    train = read_split(dataset.dir / "train.jsonl")
    keys = []
    for n, baseline in enumerate(cfg.baselines):
        if baseline.shots == 0 and not baseline.constraint and not baseline.model and not baseline.api_model:
            log.info("baselines[%d]: zero-shot, free generation, on the base model is the base version itself "
                     "(%s)", n, base.info["version_key"])
            continue
        try:
            keys.append(_one(cfg, n, baseline, base, dataset, train, run_id))
        except ValueError as e:
            raise ValueError(f"baselines[{n}]: {e}".replace(f"baselines[{n}]: baselines: ", f"baselines[{n}]: ")
                             ) from None
    return keys


def _one(cfg: PipelineConfig, n: int, b: BaselineConfig, base: ArtifactRef, dataset: ArtifactRef,
         train: list[dict], run_id: str | None) -> str:
    model = b.model or ("" if b.api_model else base.info["version_key"])
    if model:
        registry(cfg).get(model)  # a model that is not registered is a one-line error naming it
    class_field = b.class_field or cfg.eval.classification.field or _first_field(train)
    recipe = PromptRecipe(shots=draw_shots(train, b.shots, b.draw, class_field, b.seed),
                          draw=b.draw if b.shots else "none", class_field=class_field if b.draw == "per_class" else "",
                          constraint=b.constraint, allowed_outputs=_allowed(cfg, b.constraint, train))
    what = {"model": model, "api_model": b.api_model, "recipe": recipe.model_dump()}

    def build(out: Path) -> dict:
        recipe.save(out)
        return {"version_key": key, "shots": len(recipe.shots), "constraint": recipe.constraint,
                "shown_lines": [s.line for s in recipe.shots], "model": model, "api_model": b.api_model}

    digest = hashlib.sha256(repr(sorted(what.items())).encode()).hexdigest()[:8]
    subject = _slug(b.api_model) if b.api_model else model.removeprefix("base-")
    key = check_key(f"prompt-{subject[:48]}-{b.shots}shot{'-' + recipe.constraint if recipe.constraint else ''}-"
                    f"{digest}")
    ref = build_artifact(cfg, "prompt_recipe", build, recipe=what,
                         inputs=[dataset, {"asset": "model_version", "key": model} if model else
                                 {"asset": "api model", "key": b.api_model}],
                         config=b.model_dump(), unchanged=f"baseline {key}", run_id=run_id)
    registry(cfg).register(key, "prompted", remote_id=b.api_model or None,
                           artifact=ArtifactAddress(asset=ref.asset, key=ref.key),
                           info={"model": model, "api_model": b.api_model, "shots": len(recipe.shots),
                                 "constraint": recipe.constraint, "dataset": dataset.key,
                                 "shown_lines": [s.line for s in recipe.shots]})
    log.info("baselines[%d]: model version %s (%d shots from train.jsonl lines %s%s)", n, key, len(recipe.shots),
             [s.line for s in recipe.shots], f", constrained to {recipe.constraint}" if recipe.constraint else "")
    return key


def _allowed(cfg: PipelineConfig, constraint: str, train: list[dict]) -> list[str]:
    if constraint == "json":
        return json_shape_outputs(train)
    if constraint == "labels":
        c = cfg.eval.classification
        if not c.field:
            raise ValueError("constrained: labels needs eval.classification.field (the label field)")
        labels = load_labels(cfg.path(c.labels_file) if c.labels_file else None, train, c.field)
        return allowed_outputs(c.field, labels)
    return []


def _first_field(train: list[dict]) -> str:
    obj = parse_json_object(train[0]["messages"][-1]["content"]) if train else None
    return next(iter(obj), "") if obj else ""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._") or "model"

"""The sweep stages: each point trained and merged like the main adapter, recorded with its validation results,
and the winner chosen from those records alone.

A point is the config with its train section replaced by the point's, run through
the same `lora_adapter` and `merged_model` stages: the same recipe keys, so a point
already trained (by an earlier sweep, or by the main graph with the same settings)
is a cache hit, and adding a point to a sweep trains only that point.

Nothing here reads the test split: a point's record holds the adapter's best eval
loss on the val split (recorded by training) and, for select_by val/<metric>, an
eval of the point's model on val.jsonl; the winner is chosen from those records.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from finetune_pipeline.lib.config import PipelineConfig
from finetune_pipeline.lib.data.cleaning import read_split
from finetune_pipeline.lib.evaluation.backends import close_backend
from finetune_pipeline.lib.evaluation.evaluate import ClassificationSettings, EvalSettings, EvalSubject, evaluate
from finetune_pipeline.lib.stages.common import artifact_key, build_artifact, registry, remote, store
from finetune_pipeline.lib.stages.evaluation import backend_for, classification_labels
from finetune_pipeline.lib.stages.models import merged_model
from finetune_pipeline.lib.stages.training import Launcher, adapter_key, launch_subprocess, lora_adapter
from finetune_pipeline.lib.storage.artifacts import ArtifactRef
from finetune_pipeline.lib.storage.state_files import StateFiles
from finetune_pipeline.lib.sweeps import PointResult, SweepPoint, SweepSelection, select
from finetune_pipeline.lib.sweeps.config import VAL_PREFIX

log = logging.getLogger(__name__)
VAL_RESAMPLES = 100  # the val eval's intervals are not used to choose; the fewest resamples eval allows


def point_config(cfg: PipelineConfig, name: str) -> tuple[SweepPoint, PipelineConfig]:
    """The named point of the config's sweep, and the config that trains it (its train section replaced)."""
    points = {p.name: p for p in cfg.sweep_points()}
    if name not in points:
        raise ValueError(f"{name!r} is not a point of this config's sweep (points: {', '.join(points) or 'none'})")
    point = points[name]
    return point, cfg.model_copy(update={"train": point.train})  # point.train is already validated


def sweep_adapter(cfg: PipelineConfig, name: str, base: ArtifactRef, dataset: ArtifactRef,
                  launch: Launcher = launch_subprocess, run_id: str | None = None) -> ArtifactRef:
    """The point's adapter: lora_adapter with the point's train section (a cache hit if it was trained before)."""
    point, point_cfg = point_config(cfg, name)
    log.info("sweep point %s (%s)", name, point.settings_text())
    return lora_adapter(point_cfg, base, dataset, launch, run_id)


def _record_recipe(cfg: PipelineConfig, base: ArtifactRef, dataset: ArtifactRef, adapter: str) -> dict[str, Any]:
    recipe: dict[str, Any] = {"base": base.key, "dataset": dataset.key, "adapter": adapter}
    if cfg.sweep.val_metric:  # what the val eval depends on; eval_loss is the adapter's own record
        c = cfg.eval.classification
        recipe["val_eval"] = {"rows": cfg.sweep.val_rows, "max_new_tokens": cfg.eval.max_new_tokens,
                              "backend": cfg.eval.backend,
                              "classification": {"field": c.field, "labels_file": c.labels_file} if c.field else None}
        if c.field and c.answers != "free":  # only when set: records validated before the setting keep their keys
            recipe["val_eval"]["classification"]["answers"] = c.answers
    return recipe


def sweep_model(cfg: PipelineConfig, name: str, base: ArtifactRef, dataset: ArtifactRef, adapter: ArtifactRef,
                run_id: str | None = None) -> ArtifactRef:
    """The point's model version (merged_model with the point's config) and its validation record (sweep_point)."""
    _, point_cfg = point_config(cfg, name)
    merged = merged_model(point_cfg, base, adapter, run_id)
    version = merged.info["version_key"]

    def build(out: Path) -> dict:
        validation: dict[str, float | None] = {"eval_loss": adapter.info.get("eval_loss")}
        if cfg.sweep.val_metric:
            validation.update(_val_metrics(point_cfg, version, dataset))
        record = {"version": version, "adapter": adapter.key, "merged": merged.key,
                  "train_seconds": adapter.info.get("train_seconds"), "validation": validation}
        (out / "point.json").write_text(json.dumps(record, indent=2) + "\n")
        return record

    return build_artifact(cfg, "sweep_point", build, recipe=_record_recipe(cfg, base, dataset, adapter.key),
                          inputs=[adapter, merged, dataset], config={"select_by": cfg.sweep.select_by},
                          unchanged=f"point {name} already validated", run_id=run_id)


def _val_metrics(cfg: PipelineConfig, version_key: str, dataset: ArtifactRef) -> dict[str, float]:
    """The eval report's metrics for this version on the val split (never the test split), as val/<metric>."""
    val_file = dataset.dir / "val.jsonl"
    records = read_split(val_file)
    if cfg.sweep.val_rows:
        records = records[: cfg.sweep.val_rows]
    if not records:
        raise ValueError(f"{val_file}: the val split is empty; sweep.select_by {cfg.sweep.select_by} needs val rows "
                         "(data.val_fraction > 0)")
    c = cfg.eval.classification
    classification = None
    if c.field:
        labels = classification_labels(cfg, dataset.dir)
        # The main answers only (free, or label-constrained with answers: constrained): the extra scoring passes
        # (constrained, likelihood) are test-split reports, not something to choose by (SweepConfig refuses
        # select_by on them).
        classification = ClassificationSettings(field=c.field, labels=labels, answers=c.answers)
    settings = EvalSettings(max_new_tokens=cfg.eval.max_new_tokens, classification=classification,
                            latency_requests=0, resamples=VAL_RESAMPLES)
    version = registry(cfg).get(version_key)
    backend = backend_for(cfg, version, store(cfg))
    try:
        report = evaluate(backend, records, settings, EvalSubject(version=version_key, kind=version.kind,
                                                                  eval_set=f"val:{dataset.key}",
                                                                  test_file=str(val_file)))
    finally:
        close_backend(backend)
    log.info("sweep: %s on %d val rows: %s", version_key, len(records), report.metrics)
    return {f"{VAL_PREFIX}{k}": float(v) for k, v in report.metrics.items()
            if k != "n" and isinstance(v, (int, float)) and not isinstance(v, bool)}


def find_point_record(cfg: PipelineConfig, point: SweepPoint, base: ArtifactRef, dataset: ArtifactRef
                      ) -> ArtifactRef | None:
    """The point's sweep_point record if it exists; never trains or evaluates anything."""
    key = adapter_key(cfg.model_copy(update={"train": point.train}), base, dataset)
    return store(cfg).find("sweep_point", artifact_key("sweep_point", _record_recipe(cfg, base, dataset, key)))


def point_results(cfg: PipelineConfig, base: ArtifactRef, dataset: ArtifactRef
                  ) -> tuple[list[PointResult], list[ArtifactRef]]:
    """Every point's validation record; a point not trained and validated yet is an error naming it."""
    points = cfg.sweep_points()
    if not points:
        raise ValueError("the config has no sweep: section (sweep.grid or sweep.points)")
    found = {p.name: find_point_record(cfg, p, base, dataset) for p in points}
    missing = [name for name, ref in found.items() if ref is None]
    if missing:
        raise ValueError(f"sweep point(s) {missing} not trained and validated yet: materialize sweep_adapter and "
                         "sweep_model for them (finetune-pipeline sweep does)")
    results = [PointResult(name=p.name, settings=p.overrides, version=found[p.name].info["version"],
                           adapter=found[p.name].info["adapter"], train_seconds=found[p.name].info["train_seconds"],
                           validation=found[p.name].info["validation"]) for p in points]
    return results, [found[p.name] for p in points]


def sweep_winner(cfg: PipelineConfig, base: ArtifactRef, dataset: ArtifactRef, run_id: str | None = None
                 ) -> ArtifactRef:
    """The winner of the sweep by sweep.select_by on the val split, from the points' records alone."""
    results, records = point_results(cfg, base, dataset)
    selection = select(results, cfg.sweep.select_by, cfg.sweep.lower_is_better)
    to_evaluate = [selection.winner_version] if cfg.sweep.evaluate_on_test == "winner" else \
        [r.version for r in results]

    def build(out: Path) -> dict:
        (out / "selection.json").write_text(selection.model_dump_json(indent=2) + "\n")
        log.info("sweep: winner %s (%s %s = %s, on the val split)", selection.winner, selection.winner_version,
                 selection.select_by, selection.value(selection.winner))
        return {**selection.model_dump(mode="json"), "evaluate_on_test": to_evaluate}

    # The names are part of the recipe: a renamed point is the same training but a different table.
    recipe = {"points": {r.name: ref.key for r, ref in zip(results, records)}, "select_by": cfg.sweep.select_by,
              "evaluate_on_test": cfg.sweep.evaluate_on_test}
    ref = build_artifact(cfg, "sweep_winner", build, recipe=recipe, inputs=records, config=cfg.section("sweep"),
                         unchanged="same points, same validation results", run_id=run_id)
    # Beside the version, not in its registry manifest: merged_model re-registers the version on every cache hit.
    _choices(cfg).write(f"{CHOICES_DIR}/{selection.winner_version}.json", json.dumps(
        {"sweep_winner": ref.key, "select_by": selection.select_by, "value": selection.value(selection.winner),
         "points": len(selection.points)}, indent=2) + "\n")
    return ref


CHOICES_DIR = "sweep_choices"  # <artifacts_root>/sweep_choices/<version key>.json: how a sweep chose that version


def _choices(cfg: PipelineConfig) -> StateFiles:
    return StateFiles(cfg.artifacts_dir, remote(cfg))


def chosen_by(cfg: PipelineConfig, version_key: str) -> str | None:
    """How a sweep chose this version ("sweep winner of 3 points by val/classification/accuracy = 0.792"), if one
    did (the leaderboard shows it beside the version's kind)."""
    text = _choices(cfg).read(f"{CHOICES_DIR}/{version_key}.json")
    if text is None:
        return None
    choice = json.loads(text)
    value = choice["value"]
    shown = f"{value:.4g}" if isinstance(value, (int, float)) else str(value)
    return f"sweep winner of {choice['points']} points by {choice['select_by']} = {shown} on the val split"


def load_selection(ref: ArtifactRef) -> SweepSelection:
    return SweepSelection.model_validate_json((ref.dir / "selection.json").read_text())


def run_sweep(cfg: PipelineConfig, base: ArtifactRef, dataset: ArtifactRef, launch: Launcher = launch_subprocess,
              run_id: str | None = None) -> tuple[list[tuple[str, ArtifactRef, ArtifactRef]], ArtifactRef]:
    """Without Dagster (tests, scripts): every point trained (or found) and validated, then the winner.

    Returns (point name, its adapter, its record) per point, and the sweep_winner artifact.
    """
    done = []
    for point in cfg.sweep_points():
        adapter = sweep_adapter(cfg, point.name, base, dataset, launch, run_id)
        done.append((point.name, adapter, sweep_model(cfg, point.name, base, dataset, adapter, run_id)))
    return done, sweep_winner(cfg, base, dataset, run_id)

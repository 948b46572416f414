"""Promotion stages: the leaderboard over every evaluated version, the serving spec of the champion, and the
nightly retraining check. The champion decision itself is `versions.promotion.decide`."""

from __future__ import annotations

import logging
from pathlib import Path

from finetune_pipeline.lib.config import PipelineConfig
from finetune_pipeline.lib.data.raw_files import RawDataError, list_raw_files, raw_name
from finetune_pipeline.lib.evaluation.backends import BackendError
from finetune_pipeline.lib.evaluation.report import EvalReport, confusion_of
from finetune_pipeline.lib.reporting.charts import confusion_file, confusion_png, metrics_bar_chart
from finetune_pipeline.lib.stages.common import build_artifact, registry, store
from finetune_pipeline.lib.stages.evaluation import model_eval_key
from finetune_pipeline.lib.storage.artifacts import ArtifactRef
from finetune_pipeline.lib.storage.hashing import hash_file
from finetune_pipeline.lib.versions import kinds
from finetune_pipeline.lib.versions.costs import InferenceCost, endpoint_device, inference_cost
from finetune_pipeline.lib.versions.leaderboard import Leaderboard, LeaderboardRow
from finetune_pipeline.lib.versions.retraining import SECTIONS, RetrainCheck, TrainedFrom, compare
from finetune_pipeline.lib.versions.serving import ServingSpec
from finetune_pipeline.lib.versions.version import ModelVersion

log = logging.getLogger(__name__)


def collect(cfg: PipelineConfig, eval_set: ArtifactRef, versions: list[str]) -> Leaderboard:
    """Every version evaluated on this eval set with the current eval settings, ranked by the primary metric."""
    versions_registry, artifacts = registry(cfg), store(cfg)
    rows, missing = [], {}
    for key in sorted(set(versions)):
        try:
            version = versions_registry.get(key)
            eval_key = model_eval_key(cfg, key, eval_set)
        except (KeyError, BackendError) as e:
            missing[key] = str(e)
            continue
        ref = artifacts.find("model_eval", eval_key)
        if ref is None:
            missing[key] = f"not evaluated on eval set {eval_set.key} with the current eval settings"
            continue
        # The eval's report is its artifact's info (in lineage.json): read, nothing is pulled.
        report = EvalReport.model_validate(ref.info)
        cost = kinds.get(version.kind).training_cost(version, artifacts, cfg.costs)
        answering = version_inference_cost(cfg, version, report)
        rows.append(LeaderboardRow(version=key, kind=version.kind, metrics=dict(report.metrics), fields=report.fields,
                                   eval_key=eval_key, eval_path=ref.path, backend=report.backend.get("backend"),
                                   inference_device=answering.device, seconds_per_request=answering.seconds_per_request,
                                   usd_per_1k_requests=answering.usd_per_1k_requests,
                                   inference_note=answering.note, **cost.model_dump()))
    return Leaderboard.ranked(eval_set.key, eval_set.info.get("rows"), cfg.promotion.primary_metric, rows, missing)


def version_inference_cost(cfg: PipelineConfig, version: ModelVersion, report: EvalReport) -> InferenceCost:
    """USD per 1,000 requests at the eval's measured latency, on the device that answered.

    A local backend recorded this machine's device. A local version evaluated through an endpoint
    (eval.backend openai) ran on costs.endpoint_device, when configured. A remote kind (OpenAI) bills by
    token, not by device-hour, so its cost per request is not estimated here.
    """
    device = report.device
    if device is None and report.backend.get("backend") == "openai" and not kinds.get(version.kind).remote:
        device = endpoint_device(cfg.costs.endpoint_device)
    requests = int(report.metrics.get("n") or len(report.predictions))
    cost = inference_cost(report.generation_seconds, requests, device, cfg.costs)
    if device is None and kinds.get(version.kind).remote:
        cost.note = "inference cost not estimated: a remote model is billed by its provider per token"
    elif device is None and report.backend.get("backend") == "openai":
        cost.note = "inference cost unknown: the endpoint's hardware is not configured (costs.endpoint_device)"
    return cost


def leaderboard(cfg: PipelineConfig, eval_set: ArtifactRef, versions: list[str], run_id: str | None = None
                ) -> ArtifactRef:
    """leaderboard.json/.md, metrics.png, and confusion_<field>.png of the best version."""
    board = collect(cfg, eval_set, versions)
    field = board.confusion_field(cfg.promotion.confusion_field)

    def build(out: Path) -> dict:
        board.save(out)
        info = {"eval_set": eval_set.key, "primary_metric": board.primary_metric,
                "ranking": [r.version for r in board.rows], "missing": board.missing}
        if board.rows:
            bars = {f"#{r.rank} {r.version}": r.metrics for r in board.rows}
            (out / "metrics.png").write_bytes(metrics_bar_chart(board.metrics, bars, f"on eval set {board.eval_set}"))
        if field:
            top = board.best()
            # The matrix model_eval stored for its classification field, else the same function on its predictions.
            confusion = confusion_of(store(cfg).ensure_local("model_eval", top.eval_key), field)
            labels, matrix = confusion.labels, confusion.matrix
            (out / confusion_file(field)).write_bytes(
                confusion_png(labels, matrix, f"{top.version}: {field}"))
            info["confusion"] = {"version": top.version, "field": field, "labels": labels, "matrix": matrix}
        log.info("leaderboard on eval set %s: %s", eval_set.key, info["ranking"])
        return info

    recipe = {"eval_set": eval_set.key, "evals": [r.eval_key for r in board.rows], "missing": sorted(board.missing),
              "promotion": cfg.section("promotion"), "costs": cfg.section("costs")}
    inputs = [eval_set, *({"asset": "model_eval", "key": r.eval_key, "path": r.eval_path, "version": r.version}
                          for r in board.rows)]
    return build_artifact(cfg, "leaderboard", build, recipe=recipe, inputs=inputs,
                          config={"promotion": recipe["promotion"]},
                          unchanged=f"the same evals on eval set {eval_set.key}", run_id=run_id)


def serving_spec(cfg: PipelineConfig, champion: str, run_id: str | None = None) -> tuple[ArtifactRef, ServingSpec]:
    """serve_vllm.sh and serve_transformers.sh for the champion (its kind says how it is served)."""
    version = registry(cfg).get(champion)
    spec = kinds.get(version.kind).serving_spec(version, store(cfg), cfg.serving)

    def build(out: Path) -> dict:
        spec.write(out)
        return spec.model_dump(exclude_none=True)

    ref = build_artifact(cfg, "serving_spec", build, recipe={"spec": spec.model_dump(exclude_none=True)},
                         inputs=[_version_input(version)], config=cfg.section("serving"), run_id=run_id)
    return ref, spec


def _version_input(version: ModelVersion) -> dict:
    address = f"{version.artifact.asset}/{version.artifact.key}" if version.artifact else None
    return {"asset": "model_version", "key": version.key, "artifact": address}


def retrain_check(cfg: PipelineConfig) -> RetrainCheck:
    """Does the nightly schedule need to retrain: raw files or the data/model/train config changed?"""
    try:
        raw_dir = cfg.raw_dir
        files = {str(raw_dir / raw_name(p, raw_dir)): hash_file(p) for p in list_raw_files(raw_dir)}
    except (RawDataError, FileNotFoundError) as e:
        return RetrainCheck(False, f"cannot read the raw data: {e}", "")
    now = TrainedFrom(files, {s: cfg.section(s) for s in SECTIONS})
    artifacts = store(cfg)
    trained = []
    for version in registry(cfg).versions():
        then = kinds.get(version.kind).trained_from(version, artifacts)
        if then is not None:
            trained.append((then.created_at, version.key, version, then))
    if not trained:
        return compare(now, None, None)
    _, _, last, then = max(trained, key=lambda t: (t[0], t[1]))
    return compare(now, last, then)

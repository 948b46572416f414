"""Promotion stages: the leaderboard over every evaluated version, the serving spec of the champion, and the
nightly retraining check. The champion decision itself is `versions.promotion.decide`."""

from __future__ import annotations

import logging
from pathlib import Path

from finetune_pipeline.lib.config import PipelineConfig
from finetune_pipeline.lib.data.raw_files import RawDataError, list_raw_files, raw_name
from finetune_pipeline.lib.evaluation import resampling
from finetune_pipeline.lib.evaluation.backends import BackendError
from finetune_pipeline.lib.evaluation.report import EvalReport, confusion_of
from finetune_pipeline.lib.evaluation.significance import PairedTest
from finetune_pipeline.lib.reporting.charts import confusion_file, confusion_png, metrics_bar_chart
from finetune_pipeline.lib.stages.common import build_artifact, registry, store
from finetune_pipeline.lib.stages.evaluation import answering_version, is_remote, model_eval_key
from finetune_pipeline.lib.stages.general import GeneralReport, general_eval_key
from finetune_pipeline.lib.stages.sweep import chosen_by
from finetune_pipeline.lib.storage.artifacts import ArtifactRef
from finetune_pipeline.lib.storage.hashing import hash_file
from finetune_pipeline.lib.versions import kinds
from finetune_pipeline.lib.versions.costs import InferenceCost, api_inference_cost, endpoint_device, inference_cost
from finetune_pipeline.lib.versions.leaderboard import Leaderboard, LeaderboardRow
from finetune_pipeline.lib.versions.retraining import SECTIONS, RetrainCheck, TrainedFrom, compare
from finetune_pipeline.lib.versions.serving import ServingSpec
from finetune_pipeline.lib.versions.verdict import verdict
from finetune_pipeline.lib.versions.version import ModelVersion

log = logging.getLogger(__name__)


def collect(cfg: PipelineConfig, eval_set: ArtifactRef, versions: list[str], general: ArtifactRef | None = None
            ) -> Leaderboard:
    """Every version evaluated on this eval set with the current eval settings, ranked by the primary metric.

    With the general suite, each row also has that suite's metrics (general/...) when its general_eval exists.
    """
    versions_registry, artifacts = registry(cfg), store(cfg)
    rows, missing = [], {}
    for key in sorted(set(versions)):
        try:
            version = versions_registry.get(key)
            eval_key = model_eval_key(cfg, key, eval_set)
        except (KeyError, BackendError, ValueError) as e:
            missing[key] = str(e)
            continue
        ref = artifacts.find("model_eval", eval_key)
        if ref is None:
            missing[key] = f"not evaluated on eval set {eval_set.key} with the current eval settings"
            continue
        # The eval's report is its artifact's info (in lineage.json): read, nothing is pulled.
        report = EvalReport.model_validate(ref.info)
        # A prompting baseline costs what the model it prompts cost to train (nothing, for the base model).
        trained = answering_version(cfg, version)
        cost = kinds.get(trained.kind).training_cost(trained, artifacts, cfg.costs)
        answering = version_inference_cost(cfg, version, report)
        row = LeaderboardRow(version=key, kind=version.kind, metrics=dict(report.metrics), fields=report.fields,
                             eval_key=eval_key, eval_path=ref.path, backend=report.backend.get("backend"),
                             inference_device=answering.device, seconds_per_request=answering.seconds_per_request,
                             usd_per_1k_requests=answering.usd_per_1k_requests, inference_note=answering.note,
                             intervals=dict(report.intervals), fine_tuned=kinds.get(version.kind).fine_tuned,
                             latency_p50_s=report.latency.p50_s if report.latency else None,
                             latency_p95_s=report.latency.p95_s if report.latency else None,
                             prompt_tokens=report.tokens.prompt_per_request if report.tokens else None,
                             completion_tokens=report.tokens.completion_per_request if report.tokens else None,
                             chosen_by=chosen_by(cfg, key), **cost.model_dump())
        if general is not None:
            _add_general(cfg, row, general)
        rows.append(row)
    suites = {"task": eval_set.key, **({"general": general.key} if general is not None else {})}
    return Leaderboard.ranked(eval_set.key, eval_set.info.get("rows"), cfg.promotion.primary_metric, rows, missing,
                              suites)


def _add_general(cfg: PipelineConfig, row: LeaderboardRow, general: ArtifactRef) -> None:
    """The version's general-suite metrics, as columns beside its task metrics (or why there are none)."""
    key = general_eval_key(cfg, row.version, general)
    ref = store(cfg).find("general_eval", key)
    if ref is None:
        row.general_note = f"not scored on general suite {general.key} (general_eval) with the current settings"
        return
    report = GeneralReport.model_validate(ref.info)
    row.general_key = key
    row.metrics.update(report.metrics)
    row.intervals.update(report.intervals)
    if report.note:
        row.general_note = report.note


def compare_on(cfg: PipelineConfig, challenger: LeaderboardRow, champion: LeaderboardRow, metric: str
               ) -> PairedTest:
    """The paired test of two versions' evals on the same eval rows (one-sided: the challenger is better)."""
    artifacts = store(cfg)
    a = resampling.load_answers(artifacts.ensure_local("model_eval", challenger.eval_key))
    b = resampling.load_answers(artifacts.ensure_local("model_eval", champion.eval_key))
    confidence = cfg.promotion.confidence or 0.95
    return resampling.compare(a, b, metric, confidence=confidence)


def paired_tests(cfg: PipelineConfig, board: Leaderboard, champion: str | None) -> dict[str, PairedTest]:
    """Each challenger that beats the champion's score: its paired test against the champion on the primary metric.

    Only those above the champion are tested (the rest are not promoted anyway); a pair whose evals cannot be
    compared row by row has no test, which blocks its promotion while promotion.confidence is set.
    """
    rows = {r.version: r for r in board.rows}
    if champion not in rows:
        return {}
    metric, held = board.primary_metric, rows[champion]
    tests = {}
    for row in board.rows:
        score, best = row.metrics.get(metric), held.metrics.get(metric)
        if row.version == champion or score is None or best is None or score <= best:
            continue
        try:
            tests[row.version] = compare_on(cfg, row, held, metric)
        except (ValueError, FileNotFoundError) as e:
            log.warning("promotion: %s vs champion %s cannot be compared row by row: %s", row.version, champion, e)
    return tests


def version_inference_cost(cfg: PipelineConfig, version: ModelVersion, report: EvalReport) -> InferenceCost:
    """USD per 1,000 requests at the eval's measured latency, on the device that answered.

    A local backend recorded this machine's device. A local version evaluated through an endpoint
    (eval.backend openai) ran on costs.endpoint_device, when configured. A remote model (OpenAI, an API
    baseline) is billed per token: its cost is the eval's tokens per request at costs.api_per_1m_tokens.
    """
    answering = answering_version(cfg, version)
    if is_remote(answering):
        return api_inference_cost(answering.remote_id or "", report.tokens, cfg.costs)
    device = report.device
    if device is None and report.backend.get("backend") == "openai":
        device = endpoint_device(cfg.costs.endpoint_device)
    requests = int(report.metrics.get("n") or len(report.predictions))
    cost = inference_cost(report.generation_seconds, requests, device, cfg.costs)
    if device is None and report.backend.get("backend") == "openai":
        cost.note = "inference cost unknown: the endpoint's hardware is not configured (costs.endpoint_device)"
    return cost


def leaderboard(cfg: PipelineConfig, eval_set: ArtifactRef, versions: list[str], run_id: str | None = None,
                general: ArtifactRef | None = None) -> ArtifactRef:
    """leaderboard.json/.md, metrics.png, and confusion_<field>.png of the best version; the verdict."""
    board = collect(cfg, eval_set, versions, general)
    tuned, prompted = board.best_of(fine_tuned=True), board.best_of(fine_tuned=False)
    if tuned is not None and prompted is not None:
        try:
            board.comparison = compare_on(cfg, tuned, prompted, board.primary_metric)
        except (ValueError, FileNotFoundError) as e:
            log.warning("leaderboard: %s and %s cannot be compared row by row: %s", tuned.version, prompted.version, e)
    board.verdict = verdict(board, cfg.promotion.confidence or 0.95)
    field = board.confusion_field(cfg.promotion.confusion_field)

    def build(out: Path) -> dict:
        board.save(out)
        info = {"eval_set": eval_set.key, "primary_metric": board.primary_metric,
                "ranking": [r.version for r in board.rows], "missing": board.missing, "verdict": board.verdict}
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
              "general": [r.general_key for r in board.rows], "promotion": cfg.section("promotion"),
              # Only when some row has one, so leaderboards of configs without sweeps keep their keys.
              **({"chosen_by": {r.version: r.chosen_by for r in board.rows if r.chosen_by}}
                 if any(r.chosen_by for r in board.rows) else {}),
              "costs": cfg.section("costs")}
    inputs = [eval_set, *({"asset": "model_eval", "key": r.eval_key, "path": r.eval_path, "version": r.version}
                          for r in board.rows)]
    return build_artifact(cfg, "leaderboard", build, recipe=recipe, inputs=inputs,
                          config={"promotion": recipe["promotion"]},
                          unchanged=f"the same evals on eval set {eval_set.key}", run_id=run_id)


def serving_spec(cfg: PipelineConfig, champion: str, run_id: str | None = None) -> tuple[ArtifactRef, ServingSpec]:
    """serve_vllm.sh and serve_transformers.sh for the champion (its kind says how it is served)."""
    version = registry(cfg).get(champion)
    answering = answering_version(cfg, version)
    spec = kinds.get(answering.kind).serving_spec(answering, store(cfg), cfg.serving)
    if answering.key != version.key:  # a prompting baseline: its model is served, and clients send the prompt
        recipe = f"{version.artifact.asset}/{version.artifact.key}/prompt.json" if version.artifact else "its recipe"
        spec.version, spec.kind = version.key, version.kind
        spec.note = (f"serves {answering.key}, the model this prompting baseline prompts; every request must carry "
                     f"the recipe in {recipe} (its shots before the user turn"
                     + (", and its allowed outputs as vLLM structured outputs `choice`" if version.info.get(
                         "constraint") else "") + ")")

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

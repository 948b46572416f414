"""The leaderboard: every model version x metric on one eval set, with cost and time.

Only evals on the *current* eval set and eval settings count: each version's
model_eval key is recomputed from the current config and looked up in the
artifact store, so a stale report (old test split, other backend) is never
ranked next to a fresh one; such versions are listed as missing instead.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from finetune_pipeline.lib import stages
from finetune_pipeline.lib import stores as storage
from finetune_pipeline.lib.config import CostConfig, PipelineConfig
from finetune_pipeline.lib.evaluation.backends import BackendError
from finetune_pipeline.lib.evaluation.report import confusion_of
from finetune_pipeline.lib.reporting.charts import confusion_png, metrics_bar_chart
from finetune_pipeline.lib.reporting.markdown import fmt, markdown_table
from finetune_pipeline.lib.storage.artifacts import ArtifactRef, read_lineage
from finetune_pipeline.lib.storage.hashing import recipe_key
from finetune_pipeline.lib.versions.costs import (
    UnknownPriceError,
    device_hours,
    local_training_cost,
    openai_training_cost,
)

CODE_VERSION = "1"


def version_cost(manifest: dict[str, Any], costs: CostConfig) -> dict[str, Any]:
    """Wall time of training, tokens trained, device-hours and estimated USD for one version."""
    kind, info = manifest["kind"], manifest.get("info") or {}
    if kind == "base":  # the prompting baseline costs no training
        return {"train_seconds": 0.0, "tokens_trained": 0, "device": None, "device_hours": 0.0, "cost_usd": 0.0}
    if kind == "openai":
        tokens = info.get("trained_tokens")
        try:
            cost = openai_training_cost(info.get("base_model", ""), int(tokens), costs) if tokens is not None else None
        except UnknownPriceError:
            cost = info.get("estimated_cost_usd")  # what the job recorded when it ran
        return {"train_seconds": info.get("train_seconds"), "tokens_trained": tokens, "device": "openai",
                "device_hours": None, "cost_usd": None if cost is None else round(cost, 6)}
    adapter = _adapter_info(manifest)
    seconds = float(adapter.get("train_seconds") or 0.0)
    device = adapter.get("device") or costs.device
    devices = int(adapter.get("num_processes") or adapter.get("devices") or 1)  # data-parallel processes
    try:
        cost = local_training_cost(seconds, dataclasses.replace(costs, device=device), devices)
    except UnknownPriceError:
        cost = None
    return {"train_seconds": seconds, "tokens_trained": adapter.get("tokens_seen"), "device": device,
            "device_hours": round(device_hours(seconds, devices), 6),
            "cost_usd": None if cost is None else round(cost, 6)}


def _adapter_info(manifest: dict[str, Any]) -> dict[str, Any]:
    """The lora_adapter's lineage info (train_seconds, tokens_seen) behind a merged version."""
    paths = [manifest.get("info", {}).get("adapter")]
    if manifest.get("lineage") and (Path(manifest["lineage"]) / "lineage.json").is_file():
        paths += [i.get("path") for i in read_lineage(Path(manifest["lineage"])).get("inputs", [])
                  if i.get("asset") == "lora_adapter"]
    for p in paths:
        if p and (Path(p) / "lineage.json").is_file():
            return read_lineage(Path(p)).get("info", {})
    return {}


def collect(cfg: PipelineConfig, eval_set: ArtifactRef, versions: list[str]) -> dict[str, Any]:
    """Rows for every version evaluated on this eval set, ranked by the primary metric."""
    registry, store = storage.registry(cfg), storage.artifact_store(cfg)
    primary = cfg.promotion.primary_metric
    rows, missing = [], {}
    for key in sorted(set(versions)):
        try:
            manifest = registry.get(key)
            eval_key = stages.model_eval_key(cfg, key, eval_set)
        except (KeyError, BackendError) as e:
            missing[key] = str(e)
            continue
        ref = store.find("model_eval", eval_key)
        if ref is None:
            missing[key] = f"not evaluated on eval set {eval_set.key} with the current eval settings"
            continue
        report = json.loads((ref.dir / "report.json").read_text())
        rows.append({"version": key, "kind": manifest["kind"], "metrics": report["metrics"],
                     "fields": report.get("fields", []), "eval_key": eval_key, "eval_path": ref.path,
                     "backend": report.get("backend", {}).get("backend"),
                     **version_cost(manifest, cfg.costs)})
    rows.sort(key=lambda r: (-_value(r["metrics"].get(primary)), r["version"]))
    for i, row in enumerate(rows, 1):
        row["rank"] = i
    metric_names = sorted({m for r in rows for m in r["metrics"] if m != "n"},
                          key=lambda m: (m != primary, m))
    return {"eval_set": eval_set.key, "eval_set_rows": eval_set.info.get("rows"), "primary_metric": primary,
            "metrics": metric_names, "rows": rows, "missing": missing}


def _value(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not math.isnan(v) else -math.inf


def best(board: dict[str, Any]) -> dict[str, Any] | None:
    return board["rows"][0] if board["rows"] else None


def markdown(board: dict[str, Any]) -> str:
    metrics = board["metrics"]
    head = ["rank", "version", "kind", *metrics, "n", "eval set", "train s", "tokens trained", "device-h", "est. $"]
    lines = [markdown_table(head, ([r["rank"], r["version"], r["kind"], *(r["metrics"].get(m) for m in metrics),
                                    r["metrics"].get("n", ""), board["eval_set"], fmt(r["train_seconds"], 1),
                                    r["tokens_trained"], fmt(r["device_hours"], 4), fmt(r["cost_usd"], 4)]
                                   for r in board["rows"]))]
    for key, why in board["missing"].items():
        lines.append(f"\n*{key}: {why}*")
    return "\n".join(lines)


def confusion_field(board: dict[str, Any], configured: str) -> str | None:
    top = best(board)
    if top is None or not top["fields"]:
        return None
    if configured:
        return configured
    primary = board["primary_metric"]
    if primary.startswith("accuracy/") and primary.split("/", 1)[1] in top["fields"]:
        return primary.split("/", 1)[1]
    return top["fields"][0]


def build(cfg: PipelineConfig, eval_set: ArtifactRef, versions: list[str], run_id: str | None = None,
          log=print) -> ArtifactRef:
    """Write the leaderboard artifact: leaderboard.json/.md, metrics.png, confusion_<field>.png."""
    board = collect(cfg, eval_set, versions)
    field = confusion_field(board, cfg.promotion.confusion_field)
    recipe = {"eval_set": eval_set.key, "evals": [r["eval_key"] for r in board["rows"]],
              "missing": sorted(board["missing"]), "promotion": cfg.section("promotion"),
              "costs": cfg.section("costs"), "code": CODE_VERSION}
    key = recipe_key(recipe)
    store = storage.artifact_store(cfg)
    if hit := store.find("leaderboard", key):
        log(f"cache hit: the same evals on eval set {eval_set.key}, reusing leaderboard/{key}")
        return hit
    inputs = [eval_set.as_input()] + [{"asset": "model_eval", "key": r["eval_key"], "path": r["eval_path"],
                                       "version": r["version"]} for r in board["rows"]]
    with store.write("leaderboard", key, inputs=inputs, config={"promotion": recipe["promotion"]},
                     code_version=CODE_VERSION, run_id=run_id) as out:
        (out.dir / "leaderboard.json").write_text(json.dumps(board, indent=2) + "\n")
        (out.dir / "leaderboard.md").write_text(markdown(board) + "\n")
        if board["rows"]:
            (out.dir / "metrics.png").write_bytes(metrics_bar_chart(
                board["metrics"], {f"#{r['rank']} {r['version']}": r["metrics"] for r in board["rows"]},
                f"on eval set {board['eval_set']}"))
        if field:
            top = best(board)
            # The matrix model_eval stored for its classification field, else the same function on its predictions.
            confusion = confusion_of(Path(top["eval_path"]), field)
            labels, matrix = confusion.labels, confusion.matrix
            (out.dir / f"confusion_{_safe(field)}.png").write_bytes(
                confusion_png(labels, matrix, f"{top['version']}: {field}"))
            out.info.update(confusion={"version": top["version"], "field": field, "labels": labels, "matrix": matrix})
        out.info.update(eval_set=eval_set.key, primary_metric=board["primary_metric"],
                        ranking=[r["version"] for r in board["rows"]], missing=board["missing"])
    log(f"leaderboard on eval set {eval_set.key}: {[r['version'] for r in board['rows']]}")
    return out.ref


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def load(ref: ArtifactRef) -> dict[str, Any]:
    return json.loads((ref.dir / "leaderboard.json").read_text())

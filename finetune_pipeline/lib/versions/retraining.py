"""Is a retrain needed? Compare the raw files and config now with what the last fine-tuned version was trained from.

The nightly schedule asks this before it requests a run: if the raw files
(by sha256) and the config sections that make a model (data, model, train) are
what the newest fine-tuned version was trained from (read from its lineage), a
run would only produce cache hits, so it skips and says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune_pipeline.lib.storage.hashing import recipe_key

if TYPE_CHECKING:
    from finetune_pipeline.lib.storage.artifacts import ArtifactStore
    from finetune_pipeline.lib.versions.version import ModelVersion

SECTIONS = ("data", "model", "train")


@dataclass
class TrainedFrom:
    """The inputs of a training: raw file path -> sha256, and the config sections that decide the model."""

    files: dict[str, str]
    sections: dict[str, Any]  # data, model, train as plain JSON
    created_at: str = ""


@dataclass
class RetrainCheck:
    needed: bool
    reason: str
    fingerprint: str  # of the raw files + config now; the sensor's run key
    last_version: str | None = None


def trained_from_merged(version: "ModelVersion", store: "ArtifactStore") -> TrainedFrom | None:
    """merged_model <- lora_adapter <- ..., read from their lineage."""
    merged = version.lineage(store)
    if merged is None:
        return None
    adapter = _lineage(store, version, "lora_adapter", _inputs(merged)["lora_adapter"])
    return trained_from_training(version, store, adapter, created_at=merged.get("created_at", ""))


def trained_from_training(version: "ModelVersion", store: "ArtifactStore", trained: dict[str, Any],
                          created_at: str | None = None) -> TrainedFrom:
    """lora_adapter (its lineage `trained`) <- (training_dataset <- raw_examples, base_model)."""
    dataset = _lineage(store, version, "training_dataset", _inputs(trained)["training_dataset"])
    base = _lineage(store, version, "base_model", _inputs(trained)["base_model"])
    raw = _lineage(store, version, "raw_examples", _inputs(dataset)["raw_examples"])
    files = {i["path"]: i["sha256"] for i in raw.get("inputs", []) if "sha256" in i}
    return TrainedFrom(files, {"data": dataset["config"], "model": base["config"], "train": trained["config"]},
                       trained.get("created_at", "") if created_at is None else created_at)


def _lineage(store: "ArtifactStore", version: "ModelVersion", asset: str, key: str) -> dict[str, Any]:
    found = store.lineage(asset, key)
    if found is None:
        raise FileNotFoundError(f"{version.key}: the lineage of {asset}/{key} is gone")
    return found


def _inputs(lineage: dict[str, Any]) -> dict[str, str]:
    return {i["asset"]: i["key"] for i in lineage.get("inputs", []) if i.get("asset") and i.get("key")}


def compare(now: TrainedFrom, last: "ModelVersion | None", then: TrainedFrom | None) -> RetrainCheck:
    """Whether `now` differs from what `last` was trained from, and what changed."""
    fingerprint = recipe_key({"files": now.files, **now.sections})
    if last is None or then is None:
        return RetrainCheck(True, "no fine-tuned model version yet", fingerprint)
    changes = _file_changes(then.files, now.files)
    for section in SECTIONS:
        changes += [f"{section}.{path}: {old!r} -> {new!r}"
                    for path, old, new in _diff(then.sections.get(section), now.sections.get(section))]
    if not changes:
        return RetrainCheck(False, f"raw data ({len(now.files)} file(s), same sha256) and config "
                                   f"({', '.join(SECTIONS)}) unchanged since model version {last.key} "
                                   f"(trained {then.created_at}); nothing to retrain", fingerprint, last.key)
    shown = "; ".join(changes[:8]) + (f"; and {len(changes) - 8} more" if len(changes) > 8 else "")
    return RetrainCheck(True, f"changed since model version {last.key}: {shown}", fingerprint, last.key)


def _file_changes(then: dict[str, str], now: dict[str, str]) -> list[str]:
    out = [f"raw file added: {Path(p).name}" for p in sorted(set(now) - set(then))]
    out += [f"raw file removed: {Path(p).name}" for p in sorted(set(then) - set(now))]
    out += [f"raw file modified: {Path(p).name}" for p in sorted(set(now) & set(then)) if now[p] != then[p]]
    return out


def _diff(a: Any, b: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
        return out
    return [] if a == b else [(path, a, b)]

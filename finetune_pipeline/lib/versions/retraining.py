"""Is a retrain needed? Compare the raw files and config now with the last fine-tuned version's lineage.

The nightly schedule asks this before it requests a run: if the raw files
(by sha256) and the config sections that make a model (data, model, train) are
what the newest LoRA version was trained from, a run would only produce cache
hits, so it skips and says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune_pipeline.lib import stores as storage
from finetune_pipeline.lib.config import PipelineConfig
from finetune_pipeline.lib.data.raw_files import RawDataError, list_raw_files, raw_name
from finetune_pipeline.lib.storage.artifacts import has_lineage, read_lineage
from finetune_pipeline.lib.storage.hashing import hash_file, recipe_key

SECTIONS = ("data", "model", "train")


@dataclass
class RetrainCheck:
    needed: bool
    reason: str
    fingerprint: str  # of the raw files + config now; the schedule's run key
    last_version: str | None = None


def current_inputs(cfg: PipelineConfig) -> dict[str, Any]:
    raw_dir = cfg.raw_dir
    files = {str(raw_dir / raw_name(p, raw_dir)): hash_file(p) for p in list_raw_files(raw_dir)}
    return {"files": files, **{s: cfg.section(s) for s in SECTIONS}}


def last_trained_version(cfg: PipelineConfig) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The newest LoRA version and the inputs it was trained from, read from its lineage."""
    found = []
    for manifest in storage.registry(cfg).manifests():
        lineage_dir = Path(manifest.get("lineage") or "")
        if manifest["kind"] == "lora_merged" and has_lineage(lineage_dir):
            found.append((read_lineage(lineage_dir).get("created_at", ""), manifest))
    if not found:
        return None
    _, manifest = max(found, key=lambda pair: pair[0])
    return manifest, _trained_from(Path(manifest["lineage"]))


def _trained_from(merged_dir: Path) -> dict[str, Any]:
    def inputs_of(path: Path) -> dict[str, dict[str, Any]]:
        return {i["asset"]: i for i in read_lineage(path).get("inputs", []) if i.get("asset")}

    adapter = Path(inputs_of(merged_dir)["lora_adapter"]["path"])
    adapter_inputs = inputs_of(adapter)
    dataset, base = Path(adapter_inputs["training_dataset"]["path"]), Path(adapter_inputs["base_model"]["path"])
    raw = Path(inputs_of(dataset)["raw_examples"]["path"])
    files = {i["path"]: i["sha256"] for i in read_lineage(raw).get("inputs", []) if "sha256" in i}
    return {"files": files, "data": read_lineage(dataset)["config"], "model": read_lineage(base)["config"],
            "train": read_lineage(adapter)["config"]}


def check(cfg: PipelineConfig) -> RetrainCheck:
    try:
        now = current_inputs(cfg)
    except (RawDataError, FileNotFoundError) as e:
        return RetrainCheck(False, f"cannot read the raw data: {e}", "")
    fingerprint = recipe_key(now)
    last = last_trained_version(cfg)
    if last is None:
        return RetrainCheck(True, "no fine-tuned model version yet", fingerprint)
    manifest, then = last
    changes = _file_changes(then["files"], now["files"])
    for section in SECTIONS:
        changes += [f"{section}.{path}: {old!r} -> {new!r}" for path, old, new in _diff(then[section], now[section])]
    created = read_lineage(Path(manifest["lineage"])).get("created_at")
    if not changes:
        return RetrainCheck(False, f"raw data ({len(now['files'])} file(s), same sha256) and config "
                                   f"({', '.join(SECTIONS)}) unchanged since model version {manifest['key']} "
                                   f"(trained {created}); nothing to retrain", fingerprint, manifest["key"])
    shown = "; ".join(changes[:8]) + (f"; and {len(changes) - 8} more" if len(changes) > 8 else "")
    return RetrainCheck(True, f"changed since model version {manifest['key']}: {shown}", fingerprint, manifest["key"])


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

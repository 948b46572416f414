"""Walk `lineage.json` files from a model version back to the raw files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finetune_pipeline.lib.storage.artifacts import has_lineage, read_lineage
from finetune_pipeline.lib.versions.registry import Registry

# What each asset's summary line shows from its lineage info.
SUMMARY_KEYS = ("raw_rows", "kept", "quarantined", "splits", "reasons", "spec", "content_hash",
                "train_loss", "eval_loss", "steps", "tokens_seen", "train_seconds", "version_key", "metrics",
                "rows", "sha256", "fine_tuned_model", "job_id", "base_model", "trained_tokens",
                "estimated_cost_usd")


def version_lineage(registry: Registry, version: str) -> dict[str, Any]:
    manifest = registry.get(version)
    node: dict[str, Any] = {"version": version, "kind": manifest["kind"], "path": manifest["path"],
                            "remote_id": manifest.get("remote_id"), "registered_at": manifest.get("registered_at"),
                            "info": manifest.get("info", {})}
    if manifest.get("lineage") and has_lineage(Path(manifest["lineage"])):
        node["artifact"] = artifact_lineage(Path(manifest["lineage"]))
    elif manifest.get("lineage"):
        node["missing_lineage"] = manifest["lineage"]  # say so rather than fail: the manifest is still useful
    return node


def artifact_lineage(path: Path, _seen: set[str] | None = None) -> dict[str, Any]:
    seen = _seen if _seen is not None else set()
    lineage = read_lineage(path)
    node = {k: lineage.get(k) for k in ("asset", "key", "code_version", "dagster_run_id", "created_at", "config")}
    node["path"] = str(path)
    node["info"] = {k: lineage["info"][k] for k in SUMMARY_KEYS if k in lineage.get("info", {})}
    node["inputs"] = []
    for inp in lineage.get("inputs", []):
        inp_path = inp.get("path")
        if inp_path and inp_path not in seen and has_lineage(Path(inp_path)):
            seen.add(inp_path)
            node["inputs"].append(artifact_lineage(Path(inp_path), seen))
        else:
            node["inputs"].append(dict(inp))
    return node


def format_lineage(tree: dict[str, Any]) -> str:
    lines = [f"model version {tree['version']} ({tree['kind']})"
             + (f": {tree['path']}" if tree.get("path") else "")
             + (f" remote id {tree['remote_id']}" if tree.get("remote_id") else "")]
    if tree.get("registered_at"):
        lines.append(f"  registered at {tree['registered_at']}")
    for k, v in (tree.get("info") or {}).items():
        lines.append(f"  {k}: {v}")
    if tree.get("missing_lineage"):
        lines.append(f"  lineage: {tree['missing_lineage']} has no lineage.json (moved or deleted?)")
    if "artifact" in tree:
        _format_node(tree["artifact"], lines, 1)
    return "\n".join(lines)


def _format_node(node: dict[str, Any], lines: list[str], depth: int) -> None:
    pad = "  " * depth
    if "asset" in node and "key" in node and "inputs" in node:
        lines.append(f"{pad}<- {node['asset']} {node['key']}  {node['path']}")
        lines.append(f"{pad}   run {node.get('dagster_run_id')} at {node.get('created_at')}, code v{node.get('code_version')}")
        for k, v in node["info"].items():
            lines.append(f"{pad}   {k}: {v}")
        if node.get("config") and node["asset"] in ("lora_adapter", "training_dataset", "raw_examples", "model_eval",
                                                     "openai_fine_tuned_model"):
            lines.append(f"{pad}   config: {node['config']}")
        for child in node["inputs"]:
            _format_node(child, lines, depth + 1)
    else:  # an external input: a raw file or a base model source
        desc = ", ".join(f"{k}={v}" for k, v in node.items() if k != "asset")
        lines.append(f"{pad}<- {node.get('asset', 'input')}: {desc}")

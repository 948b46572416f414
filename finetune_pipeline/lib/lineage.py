"""Walk `lineage.json` files from a model version back to the raw files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finetune_pipeline.lib.artifacts import LINEAGE_FILE, read_lineage
from finetune_pipeline.lib.versions import Registry

# What each asset's summary line shows from its lineage info.
SUMMARY_KEYS = ("raw_rows", "kept", "quarantined", "splits", "reasons", "spec", "content_hash",
                "train_loss", "eval_loss", "steps", "version_key", "metrics")


def version_lineage(artifacts_root: Path, version: str) -> dict[str, Any]:
    manifest = Registry(artifacts_root).get(version)
    node: dict[str, Any] = {"version": version, "kind": manifest["kind"], "path": manifest["path"],
                            "remote_id": manifest.get("remote_id")}
    if manifest.get("lineage"):
        node["artifact"] = artifact_lineage(Path(manifest["lineage"]))
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
        if inp_path and (Path(inp_path) / LINEAGE_FILE).is_file() and inp_path not in seen:
            seen.add(inp_path)
            node["inputs"].append(artifact_lineage(Path(inp_path), seen))
        else:
            node["inputs"].append(dict(inp))
    return node


def format_lineage(tree: dict[str, Any]) -> str:
    lines = [f"model version {tree['version']} ({tree['kind']})"
             + (f": {tree['path']}" if tree.get("path") else "")
             + (f" remote id {tree['remote_id']}" if tree.get("remote_id") else "")]
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
        if node.get("config") and node["asset"] in ("lora_adapter", "training_dataset", "raw_examples", "model_eval"):
            lines.append(f"{pad}   config: {node['config']}")
        for child in node["inputs"]:
            _format_node(child, lines, depth + 1)
    else:  # an external input: a raw file or a base model source
        desc = ", ".join(f"{k}={v}" for k, v in node.items() if k != "asset")
        lines.append(f"{pad}<- {node.get('asset', 'input')}: {desc}")

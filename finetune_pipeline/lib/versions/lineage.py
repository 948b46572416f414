"""Walk `lineage.json` files from a model version back to the raw files."""

from __future__ import annotations

from typing import Any

from finetune_pipeline.lib.storage.artifacts import ArtifactStore
from finetune_pipeline.lib.versions.registry import Registry

# What each asset's summary line shows from its lineage info.
SUMMARY_KEYS = ("raw_rows", "kept", "quarantined", "splits", "reasons", "spec", "content_hash",
                "train_loss", "eval_loss", "steps", "tokens_seen", "train_seconds", "version_key", "metrics",
                "rows", "sha256", "fine_tuned_model", "job_id", "base_model", "trained_tokens",
                "estimated_cost_usd")


def version_lineage(registry: Registry, store: ArtifactStore, key: str) -> dict[str, Any]:
    """A version and the tree of artifacts behind it, read from lineage.json files (never pulling payloads)."""
    version = registry.get(key)
    weights = version.weights_dir(store, pull=False)
    node: dict[str, Any] = {"version": key, "kind": version.kind, "path": str(weights) if weights else None,
                            "remote_id": version.remote_id, "registered_at": version.registered_at,
                            "info": version.info}
    if version.artifact is not None:
        address = (version.artifact.asset, version.artifact.key)
        if store.lineage(*address) is not None:
            node["artifact"] = artifact_lineage(store, *address)
        else:  # say so rather than fail: the manifest is still useful
            node["missing_lineage"] = str(store.dir(*address))
    return node


def artifact_lineage(store: ArtifactStore, asset: str, key: str, _seen: set[tuple[str, str]] | None = None
                     ) -> dict[str, Any]:
    seen = _seen if _seen is not None else set()
    lineage = store.lineage(asset, key)
    node = {k: lineage.get(k) for k in ("asset", "key", "code_version", "dagster_run_id", "created_at", "config")}
    node["path"] = str(store.dir(asset, key))
    node["info"] = {k: lineage["info"][k] for k in SUMMARY_KEYS if k in lineage.get("info", {})}
    node["inputs"] = []
    for inp in lineage.get("inputs", []):
        address = (inp.get("asset"), inp.get("key"))
        if all(address) and address not in seen and _is_artifact(store, *address):
            seen.add(address)
            node["inputs"].append(artifact_lineage(store, *address, seen))
        else:  # an external input (a raw file, a base model's source) or a model version
            node["inputs"].append(dict(inp))
    return node


def _is_artifact(store: ArtifactStore, asset: str, key: str) -> bool:
    try:
        return store.lineage(asset, key) is not None
    except ValueError:  # not a plain folder name: an external input's label
        return False


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

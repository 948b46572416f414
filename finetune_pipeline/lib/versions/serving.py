"""How to serve a model version: the vLLM command (GPU) and the `transformers serve` one (CPU).

Both speak the OpenAI chat API, so the eval backend `openai` can evaluate the
served model and clients need no change when the champion moves.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from finetune_pipeline.lib.config import ServingConfig
from finetune_pipeline.lib.storage.artifacts import read_lineage
from finetune_pipeline.lib.storage.object_store import ensure_local_path

# vLLM accepts only these values for --max-lora-rank; round the adapter's rank up.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


class ServingError(ValueError):
    pass


def lora_parts(manifest: dict[str, Any]) -> tuple[Path, Path, int]:
    """(base model dir, adapter dir, LoRA rank) behind a merged version, from its lineage."""
    lineage = read_lineage(Path(manifest["lineage"]))
    inputs = {i.get("asset"): i.get("path") for i in lineage.get("inputs", [])}
    if not inputs.get("base_model") or not inputs.get("lora_adapter"):
        raise ServingError(f"{manifest['key']}: its lineage names no base_model and lora_adapter inputs")
    base_dir = Path(read_lineage(Path(inputs["base_model"]))["info"]["model_dir"])
    adapter_dir = Path(inputs["lora_adapter"])
    ensure_local_path(adapter_dir)  # with artifacts on object storage, this machine may not have it yet
    rank = int(json.loads((adapter_dir / "adapter_config.json").read_text())["r"])
    return base_dir, adapter_dir, rank


def vllm_lora_rank(rank: int) -> int:
    for allowed in VLLM_LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise ServingError(f"LoRA rank {rank} is above vLLM's largest --max-lora-rank {VLLM_LORA_RANKS[-1]}")


def base_model_name(manifest: dict[str, Any]) -> str:
    """The base model's own version key (base-<name>), the name vLLM serves it under in lora mode."""
    inputs = {i.get("asset"): i.get("path") for i in read_lineage(Path(manifest["lineage"])).get("inputs", [])}
    return read_lineage(Path(inputs["base_model"]))["info"].get("version_key") or f"{manifest['key']}-base"


def vllm_command(manifest: dict[str, Any], serving: ServingConfig) -> list[str]:
    """`vllm serve` for a local version; clients ask for model=<version key>."""
    key, kind = manifest["key"], manifest["kind"]
    net = ["--host", serving.host, "--port", str(serving.port)]
    if kind == "openai":
        raise ServingError(f"{key} is an OpenAI model ({manifest.get('remote_id')}); OpenAI serves it")
    if kind == "lora_merged" and serving.mode == "lora":
        base_dir, adapter_dir, rank = lora_parts(manifest)
        # The base answers to its own name; the adapter answers to the version key.
        return ["vllm", "serve", str(base_dir), "--served-model-name", base_model_name(manifest),
                "--enable-lora", "--lora-modules", f"{key}={adapter_dir}", "--max-lora-rank",
                str(vllm_lora_rank(rank)), *net, *serving.vllm_args]
    return ["vllm", "serve", str(manifest["path"]), "--served-model-name", key, *net, *serving.vllm_args]


def transformers_serve_command(manifest: dict[str, Any], host: str, port: int) -> list[str]:
    """The CPU equivalent. `transformers serve` names the model by its folder (model=<path>)."""
    if manifest["kind"] == "openai":
        raise ServingError(f"{manifest['key']} is an OpenAI model; OpenAI serves it")
    return ["transformers", "serve", str(manifest["path"]), "--host", host, "--port", str(port), "--device", "cpu"]


def spec(manifest: dict[str, Any], serving: ServingConfig) -> dict[str, Any]:
    key = manifest["key"]
    if manifest["kind"] == "openai":
        return {"version": key, "kind": "openai", "model": manifest.get("remote_id"),
                "note": "served by OpenAI: call the chat completions API with model=<remote id>"}
    vllm = vllm_command(manifest, serving)
    cpu = transformers_serve_command(manifest, "127.0.0.1" if serving.host == "0.0.0.0" else serving.host,
                                     serving.port)
    return {"version": key, "kind": manifest["kind"], "mode": serving.mode if manifest["kind"] == "lora_merged"
            else "merged", "vllm": vllm, "vllm_command": shlex.join(vllm), "vllm_model_name": key,
            "transformers_serve": cpu, "transformers_serve_command": shlex.join(cpu),
            "transformers_serve_model_name": str(manifest["path"])}


def write(spec_: dict[str, Any], folder: Path) -> None:
    (folder / "serving_spec.json").write_text(json.dumps(spec_, indent=2) + "\n")
    for name, cmd in (("serve_vllm.sh", "vllm_command"), ("serve_transformers.sh", "transformers_serve_command")):
        if spec_.get(cmd):
            (folder / name).write_text(f"#!/bin/sh\n# {spec_['version']}\nexec {spec_[cmd]}\n")
            (folder / name).chmod(0o755)

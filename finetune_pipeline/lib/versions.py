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
from typing import Any, Literal

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
    def __init__(self, artifacts_root: Path):
        self.dir = Path(artifacts_root) / REGISTRY_DIR

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
        previous = self.dir / f"{key}.json"
        first = json.loads(previous.read_text()).get("registered_at") if previous.is_file() else None
        manifest["registered_at"] = first or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{key}.json.tmp"
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        tmp.replace(self.dir / f"{key}.json")  # atomic on POSIX
        return manifest

    def get(self, key: str) -> dict[str, Any]:
        path = self.dir / f"{check_key(key)}.json"
        if not path.is_file():
            known = ", ".join(self.keys()) or "none"
            raise KeyError(f"model version {key!r} is not registered (known: {known})")
        return json.loads(path.read_text())

    def keys(self) -> list[str]:
        return sorted(p.stem for p in self.dir.glob("*.json")) if self.dir.is_dir() else []

    def manifests(self) -> list[dict[str, Any]]:
        return [self.get(k) for k in self.keys()]

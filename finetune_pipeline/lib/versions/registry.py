"""The registry of model versions: one manifest file per version key, under `<artifacts_root>/model_versions/`.

With artifacts on object storage the bucket's copy is the record (StateFiles).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune_pipeline.lib.storage.state_files import StateFiles
from finetune_pipeline.lib.versions import kinds
from finetune_pipeline.lib.versions.version import ArtifactAddress, ModelVersion, check_key

if TYPE_CHECKING:
    from finetune_pipeline.lib.storage.object_store import RemoteArtifacts

REGISTRY_DIR = "model_versions"


class Registry:
    def __init__(self, artifacts_root: Path, remote: "RemoteArtifacts | None" = None):
        self.dir = Path(artifacts_root) / REGISTRY_DIR
        self.files = StateFiles(artifacts_root, remote)

    def _read(self, key: str) -> ModelVersion | None:
        text = self.files.read(f"{REGISTRY_DIR}/{key}.json")
        return ModelVersion.model_validate_json(text) if text is not None else None

    def register(self, key: str, kind: str, *, weights: str | Path | None = None, remote_id: str | None = None,
                 artifact: ArtifactAddress | None = None, info: dict[str, Any] | None = None) -> ModelVersion:
        """Add (or confirm) a version; every cache hit re-registers, which writes nothing when nothing changed."""
        check_key(key)
        version = ModelVersion(key=key, kind=kind, weights=None if weights is None else str(weights),
                               remote_id=remote_id, artifact=artifact, info=info or {})
        kinds.get(kind).check(version)
        previous = self._read(key)
        # Re-registering keeps the first registration time.
        version.registered_at = (previous.registered_at if previous else "") or \
            _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        if previous != version:
            self.files.write(f"{REGISTRY_DIR}/{key}.json", version.model_dump_json(indent=2) + "\n")
        return version

    def get(self, key: str) -> ModelVersion:
        version = self._read(check_key(key))
        if version is None:
            known = ", ".join(self.keys()) or "none"
            raise KeyError(f"model version {key!r} is not registered (known: {known})")
        return version

    def keys(self) -> list[str]:
        return [n.removesuffix(".json") for n in self.files.names(REGISTRY_DIR, ".json")]

    def versions(self) -> list[ModelVersion]:
        return [self.get(k) for k in self.keys()]

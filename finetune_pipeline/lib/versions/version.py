"""A model version: anything that can answer and be evaluated, under a stable, safe key.

Its key is the Dagster partition key of `model_eval`, so it must be stable and
safe: letters, digits, '.', '_', '-', no '..'. What it is made of: the
artifact that produced it (asset and key, read through the artifact store, so
its lineage is found on any machine), where its weights are, or the remote id
of a model served elsewhere. What a kind of version means (how it is
evaluated, served, priced, retrained) lives in `kinds/`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from finetune_pipeline.lib.storage.artifacts import ArtifactStore

KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


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


def full_key(adapter_key: str) -> str:
    """A full fine-tune's version: named after its training artifact (lora_adapter), like a LoRA version."""
    return check_key(f"full-{adapter_key[:12]}")


class ArtifactAddress(BaseModel):
    """An artifact by its address in the store: the same on every machine, unlike its local folder."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    asset: str
    key: str


def weights_folder(weights: str, store: "ArtifactStore", artifact: ArtifactAddress | None, pull: bool = True) -> Path:
    """Where weights are: an absolute folder as it is (a model cache), or a folder inside `artifact`, whose files
    are pulled from the bucket first when `pull` and this machine lacks them."""
    if Path(weights).is_absolute():
        return Path(weights)
    address = (artifact.asset, artifact.key)
    return (store.ensure_local(*address) if pull else store.dir(*address)) / weights


class ModelVersion(BaseModel):
    """One registered version: `<artifacts_root>/model_versions/<key>.json`."""

    model_config = ConfigDict(extra="forbid")

    key: str
    kind: str = Field(description="a name in versions.kinds.KINDS: base, lora_merged, full, openai")
    artifact: ArtifactAddress | None = Field(None, description="the artifact that made it, whose lineage it has")
    weights: str | None = Field(None, description="its weights folder: absolute, or relative to the artifact's folder")
    remote_id: str | None = Field(None, description="the model's id where it is served remotely (OpenAI)")
    info: dict[str, Any] = Field(default_factory=dict)
    registered_at: str = ""

    @model_validator(mode="before")
    @classmethod
    def _from_older_manifest(cls, data: Any) -> Any:
        # Manifests written before artifacts were addressed by (asset, key) held folder paths.
        if isinstance(data, dict) and ("path" in data or "lineage" in data):
            data = dict(data)
            path, lineage = data.pop("path", None), data.pop("lineage", None)
            data.setdefault("weights", path)
            if lineage and "artifact" not in data:
                data["artifact"] = {"asset": Path(lineage).parent.name, "key": Path(lineage).name}
        return data

    def weights_dir(self, store: "ArtifactStore", pull: bool = True) -> Path | None:
        """The local folder holding the weights; an artifact's folder is pulled from the bucket if missing."""
        if self.weights is None:
            return None
        if self.artifact is None and not Path(self.weights).is_absolute():
            raise ValueError(f"model version {self.key}: weights {self.weights!r} are relative but it has no artifact")
        return weights_folder(self.weights, store, self.artifact, pull)

    def lineage(self, store: "ArtifactStore") -> dict[str, Any] | None:
        """The lineage of the artifact that made it (read, never pulled), or None."""
        return store.lineage(self.artifact.asset, self.artifact.key) if self.artifact else None

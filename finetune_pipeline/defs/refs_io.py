"""The IO manager that hands ArtifactRefs from one run to the next when artifacts are on object storage.

Dagster's default IO manager pickles outputs into the instance's local storage
folder, which a run pod on Kubernetes does not share with the next run's pod.
With `artifacts_root: s3://...` the outputs (ArtifactRefs: an asset, a key and
a path, never tensors) are kept as JSON next to the artifacts instead: JSON, so
that reading a bucket never unpickles code. A loaded ref pulls its artifact
into the local mirror when its folder is first used (`ArtifactRef.dir`).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import dagster as dg
from upath import UPath

from finetune_pipeline.lib.storage.artifacts import ArtifactRef

REFS_PREFIX = "_dagster_refs"  # under the artifacts URL; asset folders never start with "_"


def encode(obj: Any) -> str:
    if isinstance(obj, ArtifactRef):
        obj = {"__artifact_ref__": dataclasses.asdict(obj)}
    try:
        return json.dumps(obj, sort_keys=True)
    except TypeError as e:
        raise TypeError(f"ArtifactRefJsonIOManager stores ArtifactRefs and plain JSON, not {type(obj).__name__}") from e


def decode(text: str) -> Any:
    value = json.loads(text)
    if isinstance(value, dict) and "__artifact_ref__" in value:
        return ArtifactRef(**value["__artifact_ref__"])  # its files are pulled when its `dir` is used
    return value


class ArtifactRefJsonIOManager(dg.UPathIOManager):
    extension = ".json"

    def dump_to_path(self, context: dg.OutputContext, obj: Any, path: UPath) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(encode(obj))  # one PUT: readers see the previous ref or this one

    def load_from_path(self, context: dg.InputContext, path: UPath) -> Any:
        return decode(path.read_text())


class ArtifactRefsOnObjectStorage(dg.ConfigurableIOManagerFactory):
    """`io_manager` when artifacts_root is a URL: refs as JSON under <artifacts_root>/_dagster_refs/."""

    url: str
    storage_options: dict[str, Any] = {}

    def create_io_manager(self, context) -> ArtifactRefJsonIOManager:
        return ArtifactRefJsonIOManager(base_path=UPath(f"{self.url.rstrip('/')}/{REFS_PREFIX}", **self.storage_options))

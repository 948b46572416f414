"""Training on a pod that shares no folder with the run: inputs and the result travel through the bucket.

With artifacts on object storage and `train.runner: k8s`, the training pod is
handed its spec inline (on its command line) instead of as a file on a shared
volume. The spec names the bucket, the artifacts to pull (base model with its
weights, training dataset) and a prefix to upload the result to:

- in the pod, `prepare` pulls those artifacts into the pod's own mirror
  (sha256-checked, like any pull) and points the spec's paths there;
- after training, `upload_result` puts the adapter under
  `<url>/lora_adapter/.pod-outputs/<key>-<id>/` (rank 0 only);
- back in the run, `collect_result` downloads it into the artifact being
  written and deletes the prefix; the artifact is then published as usual.

The pod's mirror is `artifacts_mirror` from the run's config unless
FINETUNE_PIPELINE_ARTIFACTS_MIRROR names another folder (e.g. node-local disk).
Checkpoints stay on the pod's disk: a retried pod starts the training over.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from pathlib import Path

from finetune_pipeline.lib.object_store import RemoteArtifacts, remote_for
from finetune_pipeline.lib.train import TrainSpec

MIRROR_ENV = "FINETUNE_PIPELINE_ARTIFACTS_MIRROR"


def detach(spec: TrainSpec, remote: RemoteArtifacts, key: str, pulls: list[tuple[str, str]]) -> TrainSpec:
    """The run's spec, plus what a pod without the run's folders needs to train it."""
    return dataclasses.replace(spec, remote={
        **remote.describe(),
        "pull": [list(p) for p in pulls],
        "output": f"lora_adapter/.pod-outputs/{key}-{uuid.uuid4().hex[:8]}",
    })


def _remote(spec: TrainSpec, mirror: Path) -> RemoteArtifacts:
    r = spec.remote or {}
    return remote_for(r["url"], mirror, r.get("options"))


def prepare(spec: TrainSpec) -> TrainSpec:
    """In the pod: pull the inputs into this pod's mirror and point the spec at them."""
    run_mirror = Path(spec.remote["mirror"])
    mirror = Path(os.environ.get(MIRROR_ENV) or run_mirror).resolve()
    remote = _remote(spec, mirror)
    for asset, key in spec.remote["pull"]:
        if remote.pull(asset, key) is None:
            raise FileNotFoundError(f"{spec.remote['url']}/{asset}/{key}: not in the bucket; the training "
                                    "pod cannot get its input")

    def here(path: str) -> str:
        p = Path(path)
        return str(mirror / p.relative_to(run_mirror)) if run_mirror in p.parents else path

    return dataclasses.replace(
        spec, base_model_dir=here(spec.base_model_dir), train_file=here(spec.train_file),
        val_file=here(spec.val_file), work_dir=here(spec.work_dir),
        # The run's output folder is a temporary folder of the run's machine; train into one of ours.
        output_dir=str(mirror / "lora_adapter" / f".pod-output-{uuid.uuid4().hex[:8]}"),
        remote={**spec.remote, "mirror": str(mirror)})


def upload_result(spec: TrainSpec) -> int:
    """In the pod, after training: upload the output folder; the number of files."""
    remote = _remote(spec, Path(spec.remote["mirror"]))
    out = Path(spec.output_dir)
    files = [p for p in sorted(out.rglob("*")) if p.is_file()]
    for p in files:
        remote.put_state_file(p, f"{spec.remote['output']}/{p.relative_to(out).as_posix()}")
    return len(files)


def collect_result(spec: TrainSpec, remote: RemoteArtifacts, into: Path) -> list[str]:
    """In the run: download what the pod uploaded into `into`, then delete it from the bucket."""
    names = remote.get_state_folder(spec.remote["output"], into)
    remote.remove_state(spec.remote["output"])
    return names

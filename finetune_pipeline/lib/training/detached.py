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

Checkpoints go to the bucket too (`<url>/lora_adapter/.work-<key>/`, the
latest only, trainer_state.json last so a half-uploaded one is incomplete), and
`prepare` downloads them: a retried pod, on whatever node, resumes from the
last one as a local retry does. The run deletes them once the artifact exists.

The pod's mirror is `artifacts_mirror` from the run's config unless
FINETUNE_PIPELINE_ARTIFACTS_MIRROR names another folder (e.g. node-local disk).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path

from finetune_pipeline.lib.storage.object_store import RemoteArtifacts
from finetune_pipeline.lib.training.engine import SEEN_LOG, rank
from finetune_pipeline.lib.training.spec import DetachedRemote, TrainSpec

log = logging.getLogger(__name__)
MIRROR_ENV = "FINETUNE_PIPELINE_ARTIFACTS_MIRROR"


def detach(spec: TrainSpec, remote: RemoteArtifacts, key: str, pulls: list[tuple[str, str]]) -> TrainSpec:
    """The run's spec, plus what a pod without the run's folders needs to train it."""
    return spec.model_copy(update={"remote": DetachedRemote(
        **remote.describe(),
        pull=pulls,
        output=f"lora_adapter/.pod-outputs/{key}-{uuid.uuid4().hex[:8]}",
        work=Path(spec.work_dir).resolve().relative_to(remote.mirror).as_posix(),  # checkpoints
    )})


def _remote(spec: TrainSpec, mirror: Path) -> RemoteArtifacts:
    return RemoteArtifacts(spec.remote.url, mirror, spec.remote.options)


def prepare(spec: TrainSpec) -> TrainSpec:
    """In the pod: pull the inputs into this pod's mirror and point the spec at them."""
    run_mirror = Path(spec.remote.mirror)
    mirror = Path(os.environ.get(MIRROR_ENV) or run_mirror).resolve()
    remote = _remote(spec, mirror)
    for asset, key in spec.remote.pull:
        if remote.pull(asset, key) is None:
            raise FileNotFoundError(f"{spec.remote.url}/{asset}/{key}: not in the bucket; the training "
                                    "pod cannot get its input")

    def here(path: str) -> str:
        p = Path(path)
        return str(mirror / p.relative_to(run_mirror)) if run_mirror in p.parents else path

    work = Path(here(spec.work_dir))
    # The checkpoints an earlier pod uploaded, for the trainer to resume from: rank 0 downloads,
    # the other ranks of this pod (torchrun) wait for its marker (no process group exists yet).
    done = work / f".checkpoints-pulled-{spec.remote.output.rsplit('-', 1)[-1]}"
    if rank() == 0:
        work.mkdir(parents=True, exist_ok=True)
        remote.get_folder(spec.remote.work, work)
        done.touch()
    else:
        deadline = time.monotonic() + 3600
        while not done.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"rank {rank()}: rank 0 never finished downloading checkpoints into {work}")
            time.sleep(0.5)
    return spec.model_copy(update=dict(
        base_model_dir=here(spec.base_model_dir), train_file=here(spec.train_file),
        val_file=here(spec.val_file), work_dir=str(work),
        # The run's output folder is a temporary folder of the run's machine; train into one of ours.
        output_dir=str(mirror / "lora_adapter" / f".pod-output-{uuid.uuid4().hex[:8]}"),
        remote=spec.remote.model_copy(update={"mirror": str(mirror)})))


def upload_result(spec: TrainSpec) -> int:
    """In the pod, after training: upload the output folder; the number of files."""
    out = Path(spec.output_dir)
    rels = [p.relative_to(out).as_posix() for p in sorted(out.rglob("*")) if p.is_file()]
    _remote(spec, Path(spec.remote.mirror)).put_files(out, rels, spec.remote.output)
    return len(rels)


def checkpoint_upload(spec: TrainSpec):
    """A TrainerCallback for the pod: after each checkpoint is saved, copy it to the bucket."""
    from transformers import TrainerCallback

    remote = _remote(spec, Path(spec.remote.mirror))
    work_rel = spec.remote.work

    class CheckpointUpload(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            name = f"checkpoint-{state.global_step}"
            # Each rank's log of the examples it trained on (the artifact's data order is built from them).
            work = Path(args.output_dir)
            seen = SEEN_LOG.format(rank=args.process_index)
            if (work / seen).is_file():
                remote.put_files(work, [seen], work_rel)
            if not state.is_world_process_zero:
                return
            folder = work / name
            rels = [p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*")) if p.is_file()]
            # trainer_state.json last: a checkpoint is complete only with it (train._is_complete).
            last = [r for r in rels if r == "trainer_state.json"]
            remote.put_files(folder, [r for r in rels if r not in last], f"{work_rel}/{name}")
            remote.put_files(folder, last, f"{work_rel}/{name}")
            for old in remote.list_state(work_rel):
                if old.startswith("checkpoint-") and old != name:
                    remote.remove_state(f"{work_rel}/{old}")
            log.info("checkpoint uploaded: %s -> %s/%s/%s", name, remote.url, work_rel, name)

    return CheckpointUpload()


def collect_result(spec: TrainSpec, remote: RemoteArtifacts, into: Path) -> list[str]:
    """In the run: download what the pod uploaded into `into`, then delete it from the bucket."""
    names = remote.get_folder(spec.remote.output, into)
    remote.remove_state(spec.remote.output)
    return names


def forget_checkpoints(spec: TrainSpec, remote: RemoteArtifacts) -> None:
    """In the run, once the artifact exists: the pod's checkpoints are no longer needed."""
    remote.remove_state(spec.remote.work)

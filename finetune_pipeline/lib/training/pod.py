"""The training child on its own GPU pod: the arguments for Dagster's `PipesK8sClient.run`.

Selected by `train.runner: k8s` (settings under `train.pod`). The pod runs the
very command a local run would (`python -m finetune_pipeline.train_child SPEC`,
or torchrun with `train.num_processes` > 1) from the project image; the spec,
the base model, the dataset and the output folder are paths on a shared volume
that the pod mounts at the same path as the run that launched it. With artifacts
on object storage there is no shared volume: the spec is passed inline and the
pod exchanges files through the bucket (detached_training.py). Progress and
the result travel back through Pipes in the pod's log, as with a subprocess.
No Dagster import here: the asset passes these to the client.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from finetune_pipeline.lib.training.config import TrainConfig
from finetune_pipeline.lib.training.engine import child_command


def pod_run_args(tc: TrainConfig, spec_path: Path) -> dict[str, Any]:
    """image, command, namespace and base_pod_spec for `PipesK8sClient.run(context=..., **these)`."""
    pod = tc.pod
    if not pod.image:
        raise ValueError("train.runner is k8s but train.pod.image is empty: name the project image "
                         "(with a CUDA build of torch) that the training pod runs")
    limits = {"cpu": pod.cpu, "memory": pod.memory}
    if pod.gpus:
        limits["nvidia.com/gpu"] = str(pod.gpus)
    container: dict[str, Any] = {
        "resources": {"limits": limits},
        # torchrun's workers share tensors through /dev/shm; the default 64 MB is too small
        "volume_mounts": [{"name": "dshm", "mount_path": "/dev/shm"}],
    }
    base_pod_spec: dict[str, Any] = {
        "restart_policy": "Never",  # a failed pod fails the step; the asset's RetryPolicy resumes it
        "node_selector": dict(pod.node_selector),
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        if pod.gpus else [],
        "containers": [container],
        "volumes": [{"name": "dshm", "empty_dir": {"medium": "Memory"}}],
    }
    # Credentials for the bucket when artifacts are on object storage: a Secret as environment
    # variables, and/or a service account (IRSA / Workload Identity).
    if pod.env_from_secret:
        container["env_from"] = [{"secret_ref": {"name": pod.env_from_secret}}]
    if pod.service_account:
        base_pod_spec["service_account_name"] = pod.service_account
    args = {"image": pod.image, "namespace": pod.namespace, "base_pod_spec": base_pod_spec}

    # Only whether the spec is detached matters here, so the file is peeked at, not validated.
    if Path(spec_path).is_file() and json.loads(Path(spec_path).read_text()).get("remote"):
        # Artifacts on object storage: no shared volume; the spec rides on the command line and the
        # pod pulls its inputs from the bucket (lib/training/detached.py).
        return {**args, "command": child_command("python", Path(spec_path).read_text(), tc)}
    if not (pod.volume_claim and pod.mount_path):
        raise ValueError("train.runner is k8s: set train.pod.volume_claim and train.pod.mount_path, the shared "
                         "volume holding artifacts_root and model_cache")
    mount = Path(pod.mount_path)
    if mount not in Path(spec_path).parents:
        raise ValueError(f"the training spec {spec_path} is not under train.pod.mount_path ({mount}); "
                         "artifacts_root must be on the shared volume so the pod sees the same paths")
    container["volume_mounts"].insert(0, {"name": "shared", "mount_path": str(mount)})
    base_pod_spec["volumes"].insert(0, {"name": "shared", "persistent_volume_claim": {"claim_name": pod.volume_claim}})
    return {**args, "command": child_command("python", spec_path, tc)}  # the image's python

"""train.runner: k8s: the same training child on its own GPU pod through Dagster's PipesK8sClient.

No cluster here: these check what the asset hands `PipesK8sClient.run` (the
same command as a local run, the GPU limit, the shared volume at the same
path) against the client's real signature, and the errors for a config that
cannot work. The recipe key ignores where training runs.
"""

from __future__ import annotations

import inspect

import pytest

from finetune_pipeline.lib.config import load_config
from finetune_pipeline.lib.training.engine import child_command
from finetune_pipeline.lib.training.pod import pod_run_args
from finetune_pipeline_tests.helpers import SAMPLE_RAW, write_config

POD = {"image": "registry.example.com/finetune-pipeline:2026-11-30", "volume_claim": "finetune-shared",
       "mount_path": "/mnt/finetune", "gpus": 2, "node_selector": {"nvidia.com/gpu.present": "true"}}


def _train(tmp_path, **train):
    return load_config(write_config(tmp_path, SAMPLE_RAW, train={"runner": "k8s", "pod": POD, **train})).train


def test_pod_runs_the_same_child_command_with_gpus_and_the_shared_volume(tmp_path):
    tc = _train(tmp_path, num_processes=2)
    spec = "/mnt/finetune/artifacts/lora_adapter/.work-abc/spec.json"
    args = pod_run_args(tc, spec)
    assert args["image"] == POD["image"] and args["namespace"] == "default"
    assert args["command"] == child_command("python", spec, tc)
    assert args["command"][1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    container = args["base_pod_spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert {"name": "shared", "mount_path": "/mnt/finetune"} in container["volume_mounts"]
    assert {"name": "shared", "persistent_volume_claim": {"claim_name": "finetune-shared"}} in \
        args["base_pod_spec"]["volumes"]
    assert args["base_pod_spec"]["node_selector"] == POD["node_selector"]

    dagster_k8s = pytest.importorskip("dagster_k8s", reason="needs dagster-k8s (pip install -e '.[k8s]')")
    accepted = inspect.signature(dagster_k8s.PipesK8sClient.run).parameters
    assert set(args) <= set(accepted)


def test_pod_settings_that_cannot_work_are_refused_with_the_field_named(tmp_path):
    with pytest.raises(ValueError, match="train.pod.image is empty"):
        pod_run_args(_train(tmp_path, pod={**POD, "image": ""}), "/mnt/finetune/a/spec.json")
    with pytest.raises(ValueError, match=r"not under train.pod.mount_path \(/mnt/finetune\)"):
        pod_run_args(_train(tmp_path), "/home/me/artifacts/spec.json")


def test_where_training_runs_is_not_part_of_the_adapter_key(tmp_path):
    from finetune_pipeline.lib import stages
    from finetune_pipeline.lib.storage.artifacts import ArtifactRef

    # Refs stand in for base model and dataset: only their keys enter the recipe.
    base = ArtifactRef("base_model", "b" * 16, str(tmp_path / "base"), info={"model_dir": str(tmp_path / "base")})
    dataset = ArtifactRef("training_dataset", "d" * 16, str(tmp_path / "dataset"))
    keys = []

    def capture(spec_path):
        keys.append(spec_path.parent.name)  # the recipe's work dir: .work-<key>
        raise RuntimeError("captured")
    for runner, lr in (("subprocess", 0.001), ("k8s", 0.001), ("k8s", 0.002)):
        cfg = load_config(write_config(tmp_path, SAMPLE_RAW, train={"runner": runner, "pod": POD, "learning_rate": lr}))
        with pytest.raises(RuntimeError, match="captured"):
            stages.lora_adapter(cfg, base, dataset, launch=capture)
    assert keys[0] == keys[1] != keys[2]  # the runner changes nothing; the learning rate does

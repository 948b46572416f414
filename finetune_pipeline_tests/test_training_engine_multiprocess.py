"""The unchanged training child under `torchrun --nproc_per_node 2` on CPU (gloo): data parallel for real."""

from __future__ import annotations

import json

import pytest
import torch

from finetune_pipeline.lib import stages
from finetune_pipeline.lib.config import load_config
from finetune_pipeline.lib.training.engine import ORDER_FILE, child_command
from finetune_pipeline_tests.helpers import SAMPLE_RAW, write_config

TRAIN = {"num_processes": 2, "max_steps": 3, "batch_size": 2, "eval_steps": 3, "logging_steps": 1,
         "learning_rate": 0.005}


@pytest.mark.slow
def test_two_processes_train_one_adapter_on_different_examples(tmp_path):
    cfg = load_config(write_config(tmp_path, SAMPLE_RAW, data={"val_fraction": 0.03, "test_fraction": 0.03},
                                   train=TRAIN))
    assert child_command("python", tmp_path / "spec.json", cfg.train)[1:6] == [
        "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    base = stages.base_model(cfg)
    dataset = stages.training_dataset(cfg, stages.raw_examples(cfg), base)

    adapter = stages.lora_adapter(cfg, base, dataset)  # the default launcher: torchrun, then the same child

    assert adapter.info["num_processes"] == 2 and adapter.info["steps"] == 3
    assert (adapter.dir / "adapter_model.safetensors").is_file()
    seen = [json.loads(line) for line in (adapter.dir / ORDER_FILE).read_text().splitlines()]
    by_rank = {r: [i for s in seen if s["rank"] == r for i in s["ids"]] for r in (0, 1)}
    # Each rank trained 3 steps x 2 examples, and never an example the other rank had.
    assert len(by_rank[0]) == len(by_rank[1]) == 6
    assert not set(by_rank[0]) & set(by_rank[1])
    assert len(set(by_rank[0] + by_rank[1])) == 12
    # Tokens are counted over both ranks: at least the 12 examples' shortest possible rows.
    assert adapter.info["tokens_seen"] >= 12 * 50


def test_accelerate_launcher_without_gpus_says_to_use_torchrun(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA to check the CPU error")
    tc = load_config(write_config(tmp_path, SAMPLE_RAW, train={**TRAIN, "launcher": "accelerate"})).train
    with pytest.raises(RuntimeError, match="use train.launcher: torchrun for several CPU processes"):
        child_command("python", tmp_path / "spec.json", tc)
    on_pod = child_command("python", tmp_path / "spec.json", tc.model_copy(update={"runner": "k8s"}))  # the pod has the GPUs
    assert on_pod[1:5] == ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes"]

"""Resume after kill -9: the next attempt starts at the last complete checkpoint and trains exactly
the run that would have happened without the crash (same step count, same examples per step).

The training child runs for real (tiny model); the test SIGKILLs it as soon as
it announces a complete checkpoint, plants a half-written checkpoint with a
higher number, and retries the stage. An uninterrupted run of the same recipe
(another artifacts root) is the reference for the data order and the losses.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from finetune_pipeline.lib import stages
from finetune_pipeline.lib.config import load_config
from finetune_pipeline.lib.training.engine import (
    ORDER_FILE,
    child_command,
    last_complete_checkpoint,
    train_model,
)
from finetune_pipeline.lib.training.spec import TrainSpec
from finetune_pipeline_tests.helpers import SAMPLE_RAW, write_config

# Trains for real, twice, with a SIGKILL in between.
pytestmark = pytest.mark.slow

# A small val split keeps the evals cheap; patience 0 so nothing stops early.
DATA = {"val_fraction": 0.03, "test_fraction": 0.03}
TRAIN = {"max_steps": 8, "batch_size": 2, "eval_steps": 2, "save_steps": 2, "logging_steps": 1,
         "early_stopping_patience": 0, "learning_rate": 0.005}


def _prepared(folder: Path):
    folder.mkdir()
    cfg = load_config(write_config(folder, SAMPLE_RAW, data=DATA, train=TRAIN))
    base = stages.base_model(cfg)
    dataset = stages.training_dataset(cfg, stages.raw_examples(cfg), base)
    return cfg, base, dataset


def _kill_after_first_checkpoint(log: Path):
    def launch(spec_path: Path) -> dict:
        command = child_command(sys.executable, spec_path, TrainSpec.load(spec_path).train)
        with open(log, "w") as err:
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True)
            for line in proc.stdout:
                if line.startswith("checkpoint saved:"):
                    os.kill(proc.pid, signal.SIGKILL)
                    break
            proc.wait()
        assert proc.returncode == -signal.SIGKILL, f"child ended by itself ({proc.returncode}):\n{log.read_text()}"
        raise RuntimeError("training child killed")
    return launch


def _in_process(spec_path: Path) -> dict:
    return train_model(TrainSpec.load(spec_path))


def _order(adapter) -> list[tuple[int, list[int]]]:
    lines = (adapter.dir / ORDER_FILE).read_text().splitlines()
    return [(r["step"], r["ids"]) for r in map(json.loads, lines)]


def _losses(adapter) -> list[float]:
    return [p["loss"] for p in adapter.info["loss_curve"] if "loss" in p]


def test_kill_9_then_resume_from_last_complete_checkpoint_same_steps_same_data_order(tmp_path):
    cfg, base, dataset = _prepared(tmp_path / "crash")
    try:
        stages.lora_adapter(cfg, base, dataset, launch=_kill_after_first_checkpoint(tmp_path / "child.log"))
        raise AssertionError("the killed attempt must fail the stage")
    except RuntimeError as e:
        assert "killed" in str(e)

    key = next(cfg.artifacts_dir.glob("lora_adapter/.work-*")).name.removeprefix(".work-")
    work = stages.training_work_dir(cfg, key)
    survivor = last_complete_checkpoint(work)
    assert survivor is not None, "the checkpoint announced before the kill must be complete"
    resumed_at = int(survivor.name.split("-")[1])
    assert 2 <= resumed_at < 8
    assert not list(cfg.artifacts_dir.glob("lora_adapter/[!.]*"))  # no finished artifact
    # A half-written later checkpoint (weights, no trainer state): must be ignored, not resumed from.
    half = work / "checkpoint-7"
    half.mkdir()
    (half / "adapter_model.safetensors").write_bytes((survivor / "adapter_model.safetensors").read_bytes()[:100])

    resumed = stages.lora_adapter(cfg, base, dataset)  # the retry: a fresh child process
    assert resumed.info["resumed_from_step"] == resumed_at
    assert resumed.info["steps"] == resumed.info["max_steps"] == 8
    assert (resumed.dir / "adapter_model.safetensors").is_file()
    assert not work.exists()  # checkpoints retired once the artifact is complete

    # Same recipe (same base, dataset and config), another artifacts root: trained in one go.
    ref_cfg = load_config(write_config(tmp_path, SAMPLE_RAW, data=DATA, train=TRAIN))
    assert ref_cfg.artifacts_dir != cfg.artifacts_dir
    reference = stages.lora_adapter(ref_cfg, base, dataset, launch=_in_process)
    assert reference.key == resumed.key and reference.info["resumed_from_step"] == 0
    order = _order(resumed)
    assert [s for s, _ in order] == list(range(1, 9))
    assert order == _order(reference)  # the same examples at every step, before and after the crash
    # Optimizer, scheduler and RNG came back too: the step losses are the uninterrupted run's.
    assert len(_losses(resumed)) == 8
    assert max(abs(a - b) for a, b in zip(_losses(resumed), _losses(reference))) < 1e-3

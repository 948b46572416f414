"""A session fixture: three real model versions (base + two LoRA trainings with different configs).

Built once through the lib stages with the tiny random model (two short
trainings in child processes); the tests that need versions (backfill,
leaderboard, promotion, schedule, `transformers serve`) share it. The raw folder
is a copy of the sample data, so a test may add a file and must remove it again.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from finetune_pipeline.lib import stages
from finetune_pipeline.lib.config import PipelineConfig, load_config
from finetune_pipeline.lib.storage.artifacts import ArtifactRef
from finetune_pipeline_tests.helpers import SAMPLE_RAW, write_config

# Two LoRA configs that differ in rank, learning rate and steps.
TRAIN_A = {"max_steps": 2, "batch_size": 4, "eval_steps": 2, "learning_rate": 0.005, "lora": {"r": 4, "alpha": 8}}
TRAIN_B = {"max_steps": 3, "batch_size": 4, "eval_steps": 3, "learning_rate": 0.02, "lora": {"r": 8, "alpha": 16}}


@dataclass
class Versions:
    root: Path
    raw_dir: Path
    artifacts: Path
    config_a: Path
    config_b: Path
    base: str
    lora_a: str
    lora_b: str
    eval_set: ArtifactRef

    @property
    def keys(self) -> list[str]:
        return [self.base, self.lora_a, self.lora_b]

    def cfg(self, which: str = "a") -> PipelineConfig:
        return load_config(self.config_a if which == "a" else self.config_b)


def _config(root: Path, name: str, raw_dir: Path, artifacts: Path, train: dict) -> Path:
    folder = root / name
    folder.mkdir()
    return write_config(folder, raw_dir, train=train, artifacts_root=str(artifacts))


@pytest.fixture(scope="session")
def three_versions(tmp_path_factory) -> Versions:
    root = tmp_path_factory.mktemp("versions")
    raw_dir = root / "raw"
    shutil.copytree(SAMPLE_RAW, raw_dir)
    artifacts = root / "artifacts"
    config_a = _config(root, "a", raw_dir, artifacts, TRAIN_A)
    config_b = _config(root, "b", raw_dir, artifacts, TRAIN_B)
    keys = []
    for path in (config_a, config_b):
        cfg = load_config(path)
        raw = stages.raw_examples(cfg)
        base = stages.base_model(cfg)
        dataset = stages.training_dataset(cfg, raw, base)
        evals = stages.eval_set(cfg, dataset)
        adapter = stages.lora_adapter(cfg, base, dataset)
        merged = stages.merged_model(cfg, base, adapter)
        keys.append((base.info["version_key"], merged.info["version_key"]))
    (base_a, lora_a), (base_b, lora_b) = keys
    assert base_a == base_b and lora_a != lora_b  # one base, two different trainings
    return Versions(root, raw_dir, artifacts, config_a, config_b, base_a, lora_a, lora_b, evals)

"""Shared fixtures: a tiny random model (fast) and configs that point at temp folders.

The tiny model is a real Llama architecture with SmolLM2's tokenizer and chat
template, built from a config, so every code path (templating, LoRA, merge,
generation) runs for real in seconds. Its conversion cache is the project's
own model cache, so it is built once per machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from finetune_pipeline.lib import PROJECT_ROOT
from finetune_pipeline.lib.config import load_config
from finetune_pipeline.lib.models.base_models import (
    load_model,
    load_tokenizer,
    resolve_base_model,
)

MODEL_CACHE = PROJECT_ROOT / "data" / "model_cache"
SAMPLE_RAW = PROJECT_ROOT / "data" / "raw"

TINY_TRAIN = {"max_steps": 4, "batch_size": 4, "eval_steps": 2, "logging_steps": 1, "learning_rate": 0.005}
TINY_EVAL = {"limit": 6, "max_new_tokens": 8, "batch_size": 8}


# autouse: build the cached tiny model before any test, so a first-time conversion
# (which prints progress to stderr) never lands inside a test that checks stderr.
@pytest.fixture(scope="session", autouse=True)
def tiny_model_dir() -> Path:
    return resolve_base_model("tiny-random", MODEL_CACHE).path


@pytest.fixture(scope="session")
def tiny_lm(tiny_model_dir):
    return load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


def write_config(folder: Path, raw_dir: Path, **sections) -> Path:
    """A config file in `folder` with tiny-model defaults; `sections` override them."""
    values = {
        "data": {"raw_dir": str(raw_dir), "min_train_rows": 5},
        "model": {"base_model": "tiny-random"},
        "train": dict(TINY_TRAIN),
        "eval": dict(TINY_EVAL),
        "artifacts_root": str(folder / "artifacts"),
        "model_cache": str(MODEL_CACHE),
    }
    for name, value in sections.items():
        values[name] = {**values[name], **value} if isinstance(value, dict) and name in values else value
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.fixture
def tiny_config_path(tmp_path) -> Path:
    return write_config(tmp_path, SAMPLE_RAW)


@pytest.fixture
def tiny_config(tiny_config_path):
    return load_config(tiny_config_path)


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


SYSTEM = "Classify the message. Reply with JSON."


def seed_row(text: str, category: str = "billing", **extra) -> dict:
    return {"system_prompt": SYSTEM, "input": text,
            "output": json.dumps({"category": category, "sentiment": "neutral", "priority": "low"}), **extra}


# Session fixture `three_versions` (base + two LoRA versions), shared by the version tests.
from finetune_pipeline_tests.model_versions import three_versions  # noqa: E402,F401

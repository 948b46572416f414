"""Shared fixtures: a tiny random model (fast) and configs that point at temp folders.

The tiny model is a real Llama architecture with SmolLM2's tokenizer and chat
template, built from a config, so every code path (templating, LoRA, merge,
generation) runs for real in seconds. Its conversion cache is the project's
own model cache, so it is built once per machine.

Fixtures only: the plain helpers and constants (write_config, write_jsonl,
seed_row, SAMPLE_RAW, ...) are in helpers.py.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from finetune_pipeline.lib.config import load_config
from finetune_pipeline.lib.models.base_models import (
    load_model,
    load_tokenizer,
    resolve_base_model,
)
from finetune_pipeline_tests.helpers import MODEL_CACHE, SAMPLE_RAW, write_config


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


# A real Dagster instance in a temporary DAGSTER_HOME, for the tests that materialize the graph.
@pytest.fixture
def instance(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as inst:
        yield inst


@pytest.fixture
def tiny_config_path(tmp_path) -> Path:
    return write_config(tmp_path, SAMPLE_RAW)


@pytest.fixture
def tiny_config(tiny_config_path):
    return load_config(tiny_config_path)


# Session fixture `three_versions` (base + two LoRA versions), shared by the version tests.
from finetune_pipeline_tests.model_versions import three_versions  # noqa: E402,F401

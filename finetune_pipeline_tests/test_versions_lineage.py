"""`finetune-pipeline lineage` for every kind of version: base, merged LoRA, OpenAI fine-tuned."""

from __future__ import annotations

import json
import shutil

import pytest

from finetune_pipeline import cli
from finetune_pipeline.lib.storage.artifacts import ArtifactStore
from finetune_pipeline.lib.versions.registry import Registry
from finetune_pipeline.lib.versions.version import ArtifactAddress, VersionKeyError
from finetune_pipeline_tests.helpers import write_config

FT_MODEL = "ft:gpt-4o-mini-2024-07-18:acme:finetune-pipeline:B2x9Kq1L"


@pytest.fixture
def every_kind(three_versions, tmp_path):
    """A copy of the fixture's artifacts (base and LoRA versions) plus an OpenAI version, as OpenAI fine-tuning
    registers it."""
    versions = three_versions
    artifacts = tmp_path / "artifacts"
    shutil.copytree(versions.artifacts, artifacts)
    registry, store = Registry(artifacts), ArtifactStore(artifacts)
    merged = registry.get(versions.lora_a).lineage(store)
    adapter = next(i for i in merged["inputs"] if i["asset"] == "lora_adapter")
    dataset = next(i for i in store.lineage("lora_adapter", adapter["key"])["inputs"]
                   if i["asset"] == "training_dataset")
    with store.write("openai_fine_tuned_model", "0a1b2c3d4e5f6a7b", inputs=[dataset],
                     config={"base_model": "gpt-4o-mini-2024-07-18", "n_epochs": 3},
                     code_version="1", run_id="run-openai") as out:
        out.info.update(fine_tuned_model=FT_MODEL, job_id="ftjob-B2x9Kq1L", base_model="gpt-4o-mini-2024-07-18",
                        trained_tokens=43_200, estimated_cost_usd=0.1296)
    registry.register("openai-finetune-pipeline-B2x9Kq1L", "openai", remote_id=FT_MODEL,
                      artifact=ArtifactAddress(asset=out.ref.asset, key=out.ref.key),
                      info={"base_model": "gpt-4o-mini-2024-07-18", "job_id": "ftjob-B2x9Kq1L",
                            "trained_tokens": 43_200, "estimated_cost_usd": 0.1296})
    return write_config(tmp_path, versions.raw_dir, artifacts_root=str(artifacts))


def _lineage(config, key, capsys, *extra):
    assert cli.main(["lineage", key, "--config", str(config), *extra]) == 0
    return capsys.readouterr().out


@pytest.mark.slow
def test_lineage_of_a_base_version(every_kind, three_versions, capsys):
    text = _lineage(every_kind, three_versions.base, capsys)
    assert text.startswith(f"model version {three_versions.base} (base): ")
    assert "<- base_model " in text and "spec: tiny-random" in text


@pytest.mark.slow
def test_lineage_of_a_merged_lora_version_reaches_the_raw_file(every_kind, three_versions, capsys):
    text = _lineage(every_kind, three_versions.lora_a, capsys)
    assert f"model version {three_versions.lora_a} (lora_merged)" in text
    for asset in ("merged_model", "lora_adapter", "training_dataset", "raw_examples", "base_model"):
        assert f"<- {asset} " in text
    assert "support_tickets.jsonl" in text and "sha256=" in text and "'r': 4" in text


@pytest.mark.slow
def test_lineage_of_an_openai_version_shows_remote_id_job_and_data(every_kind, capsys):
    text = _lineage(every_kind, "openai-finetune-pipeline-B2x9Kq1L", capsys)
    assert text.splitlines()[0] == f"model version openai-finetune-pipeline-B2x9Kq1L (openai) remote id {FT_MODEL}"
    assert "job_id: ftjob-B2x9Kq1L" in text and "trained_tokens: 43200" in text
    assert "<- openai_fine_tuned_model 0a1b2c3d4e5f6a7b" in text and "'n_epochs': 3" in text
    assert "<- training_dataset " in text and "<- raw_examples " in text and "support_tickets.jsonl" in text
    tree = json.loads(_lineage(every_kind, "openai-finetune-pipeline-B2x9Kq1L", capsys, "--json"))
    assert tree["remote_id"] == FT_MODEL and tree["artifact"]["inputs"][0]["asset"] == "training_dataset"


def test_registry_refuses_bad_keys_kinds_and_missing_targets(tmp_path):
    registry = Registry(tmp_path)
    with pytest.raises(VersionKeyError, match="invalid model version key 'ft:gpt-4o:acme'"):
        registry.register("ft:gpt-4o:acme", "openai", remote_id="ft:gpt-4o:acme")
    with pytest.raises(ValueError, match="kind must be one of"):
        registry.register("x-1", "gguf", weights="/m")
    with pytest.raises(ValueError, match="an OpenAI version needs its remote model id"):
        registry.register("openai-x", "openai")
    with pytest.raises(ValueError, match="a lora_merged version needs the path of its weights"):
        registry.register("lora-x", "lora_merged")
    assert registry.keys() == []

"""Artifact store atomicity, cache lookup, lineage; version keys; config loading."""

from __future__ import annotations

import json

import pytest

from finetune_pipeline.lib.config import ConfigError, load_config
from finetune_pipeline.lib.storage.artifacts import ArtifactStore
from finetune_pipeline.lib.storage.hashing import recipe_key
from finetune_pipeline.lib.versions.registry import Registry
from finetune_pipeline.lib.versions.version import VersionKeyError, check_key


def _write(store, key="k1", fail=False):
    with store.write("thing", key, inputs=[{"asset": "x", "key": "abc", "path": "/p"}], config={"a": 1},
                     code_version="1", run_id="run-1") as out:
        (out.dir / "payload.txt").write_text("hello")
        out.info["rows"] = 3
        if fail:
            raise RuntimeError("killed mid-write")
    return out.ref


def test_write_is_atomic_and_records_lineage(tmp_path):
    store = ArtifactStore(tmp_path)
    ref = _write(store)
    lineage = json.loads((ref.dir / "lineage.json").read_text())
    assert lineage["inputs"] == [{"asset": "x", "key": "abc", "path": "/p"}]
    assert lineage["dagster_run_id"] == "run-1" and lineage["config"] == {"a": 1}
    assert set(lineage["outputs"]) == {"payload.txt"} and lineage["info"] == {"rows": 3}
    assert store.find("thing", "k1").cache_hit is True
    assert store.find("thing", "other") is None


def test_failed_write_leaves_nothing_behind(tmp_path):
    store = ArtifactStore(tmp_path)
    with pytest.raises(RuntimeError, match="killed"):
        _write(store, fail=True)
    assert store.find("thing", "k1") is None
    assert list((tmp_path / "thing").iterdir()) == []


def test_second_writer_of_same_key_keeps_first(tmp_path):
    store = ArtifactStore(tmp_path)
    first = _write(store)
    second = _write(store)
    assert first.path == second.path
    assert [p.name for p in (tmp_path / "thing").iterdir()] == ["k1"]


def test_artifact_path_cannot_escape_root(tmp_path):
    with pytest.raises(ValueError, match="escapes the artifacts root"):
        ArtifactStore(tmp_path / "root").dir("thing", "../../etc")


def test_recipe_key_is_order_independent_and_sensitive():
    assert recipe_key({"a": 1, "b": [1, 2]}) == recipe_key({"b": [1, 2], "a": 1})
    assert recipe_key({"a": 1}) != recipe_key({"a": 2})


@pytest.mark.parametrize("key", ["base-smollm2", "lora-0123abcd", "ft_gpt-4o.2024", "A1"])
def test_good_version_keys(key):
    assert check_key(key) == key


@pytest.mark.parametrize("key", ["", "../evil", "a/b", "has space", "-leading", "a..b", "x" * 101, "ü"])
def test_bad_version_keys_are_refused(key):
    with pytest.raises(VersionKeyError, match="invalid model version key"):
        check_key(key)


def test_registry_roundtrip_and_unknown_version(tmp_path):
    reg = Registry(tmp_path)
    reg.register("base-x", "base", weights="/models/x")
    assert reg.get("base-x").weights == "/models/x" and reg.keys() == ["base-x"]
    with pytest.raises(KeyError, match="'nope' is not registered \\(known: base-x\\)"):
        reg.get("nope")


def test_config_resolves_paths_against_its_own_folder(tmp_path):
    (tmp_path / "cfg").mkdir()
    path = tmp_path / "cfg" / "c.yaml"
    path.write_text("data:\n  raw_dir: ../raw\nartifacts_root: out\n")
    cfg = load_config(path)
    assert cfg.raw_dir == tmp_path / "raw" and cfg.artifacts_dir == tmp_path / "cfg" / "out"


def test_config_unknown_field_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lora:\n    rank: 8\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: train\.lora has unknown field\(s\) \['rank'\]"):
        load_config(path)


def test_cost_estimates_use_the_price_table():
    from finetune_pipeline.lib.config import CostConfig
    from finetune_pipeline.lib.versions.costs import (
        UnknownPriceError,
        local_training_cost,
        openai_training_cost,
    )

    costs = CostConfig(device="h100", hourly_usd={"h100": 4.0},
                       openai_training_per_1m_tokens={"gpt-4o-mini-2024-07-18": 3.0})
    assert local_training_cost(1800, costs, devices=2) == pytest.approx(4.0)
    assert openai_training_cost("gpt-4o-mini-2024-07-18", 2_000_000, costs) == pytest.approx(6.0)
    with pytest.raises(UnknownPriceError, match="no OpenAI training price for 'davinci'"):
        openai_training_cost("davinci", 1, costs)

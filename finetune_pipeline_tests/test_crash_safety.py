"""Crash safety of artifact writes, with real processes and a real Dagster instance.

A materialization is SIGKILLed inside the dataset's artifact write (the point is
made deterministic by materialize_child.py, which announces it and waits), then
a second run must complete; two runs writing the same artifact at the same
moment must both finish with one valid artifact.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from finetune_pipeline.lib import PROJECT_ROOT
from finetune_pipeline.lib.config import load_config
from finetune_pipeline.lib.storage.artifacts import (
    LINEAGE_FILE,
    ArtifactStore,
    read_lineage,
)
from finetune_pipeline.lib.storage.hashing import hash_file
from finetune_pipeline.lib.storage.temp_folders import TMP_PATTERN, host_id
from finetune_pipeline_tests.helpers import SAMPLE_RAW, materialized, write_config


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A persistent Dagster instance shared with child processes, and a config; base_model already materialized."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    config = write_config(tmp_path, SAMPLE_RAW)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("FINETUNE_PIPELINE_CONFIG", str(config))
    from finetune_pipeline.defs import training
    from finetune_pipeline.defs.settings import PipelineSettings

    with dg.DagsterInstance.get() as instance:
        assert materialized(dg.materialize([training.base_model], instance=instance,
                                           resources={"settings": PipelineSettings()})) == ["base_model"]
    return load_config(config)


def spawn(mode: str, signals: Path, log: Path) -> subprocess.Popen:
    signals.mkdir(exist_ok=True)
    out = open(log, "w")  # a file, not a pipe: Dagster's log output could fill a pipe and stall the child
    return subprocess.Popen([sys.executable, "-m", "finetune_pipeline_tests.materialize_child", mode, str(signals)],
                            cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy())


def wait_for_signal(signals: Path, proc: subprocess.Popen, log: Path, timeout: float = 240) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if found := list(signals.glob("in-write-*")):
            return Path(found[0].read_text())
        if proc.poll() is not None:
            pytest.fail(f"child exited {proc.returncode} before reaching the write:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    proc.kill()
    pytest.fail("child never reached the artifact write")


def unfinished_final_dirs(root: Path) -> list[Path]:
    """Folders under a final artifact name that lack lineage.json (must always be none)."""
    return [d for asset in root.iterdir() if asset.is_dir() for d in asset.iterdir()
            if d.is_dir() and not d.name.startswith(".") and not (d / LINEAGE_FILE).is_file()]


def assert_valid_artifact(path: Path) -> dict:
    lineage = read_lineage(path)
    files = {str(p.relative_to(path)): hash_file(p) for p in path.rglob("*") if p.is_file() and p.name != LINEAGE_FILE}
    assert lineage["outputs"] == files
    assert lineage["info"]["raw_rows"] == lineage["info"]["kept"] + lineage["info"]["quarantined"]
    return lineage


def latest(instance, asset: str):
    return instance.get_latest_materialization_event(dg.AssetKey(asset))


@pytest.mark.slow
def test_killed_mid_write_leaves_nothing_visible_and_the_next_run_completes(home, tmp_path):
    store = ArtifactStore(home.artifacts_dir)
    signals, log = tmp_path / "signals", tmp_path / "killed.log"
    proc = spawn("pause", signals, log)
    tmp = wait_for_signal(signals, proc, log)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL

    # The kill landed mid-write: a temporary folder holds a half-written file...
    assert tmp.name.startswith(".tmp-") and tmp.is_dir()
    assert not (tmp / LINEAGE_FILE).exists()
    assert (tmp / "train.jsonl").read_text().endswith('"content": "half a li')
    key = TMP_PATTERN.match(tmp.name)["key"]
    # ...and nothing of it is visible: no artifact, no final folder, no materialization.
    assert store.find("training_dataset", key) is None
    assert not (home.artifacts_dir / "training_dataset" / key).exists()
    assert unfinished_final_dirs(home.artifacts_dir) == []
    with dg.DagsterInstance.get() as instance:
        assert latest(instance, "training_dataset") is None
        assert latest(instance, "raw_examples") is not None  # the step before the kill did finish

    # The next run completes, reusing raw_examples, and removes the dead run's temporary folder.
    rerun = spawn("plain", signals, tmp_path / "rerun.log")
    assert rerun.wait(timeout=300) == 0, (tmp_path / "rerun.log").read_text()[-3000:]
    ref = store.find("training_dataset", key)
    assert ref is not None
    assert_valid_artifact(ref.dir)
    assert not tmp.exists()
    assert sorted(p.name for p in (home.artifacts_dir / "training_dataset").iterdir()) == [key]
    assert "cache hit: raw files unchanged" in (tmp_path / "rerun.log").read_text()
    with dg.DagsterInstance.get() as instance:
        assert latest(instance, "training_dataset").asset_materialization.metadata["artifact_key"].value == key


@pytest.mark.slow
def test_two_concurrent_runs_of_the_same_asset_both_finish_with_one_valid_artifact(home, tmp_path):
    signals = tmp_path / "signals"
    procs = [spawn("barrier", signals, tmp_path / f"run{i}.log") for i in (1, 2)]
    codes = [p.wait(timeout=400) for p in procs]
    logs = [(tmp_path / f"run{i}.log").read_text() for i in (1, 2)]
    assert codes == [0, 0], "\n".join(x[-3000:] for x in logs)

    # Both were inside the write at the same time, each in its own temporary folder.
    tmps = {Path(p.read_text()) for p in signals.glob("in-write-*")}
    assert len(tmps) == 2 and not any(t.exists() for t in tmps)
    # One artifact, complete and consistent; both runs point at it.
    folder = home.artifacts_dir / "training_dataset"
    [final] = list(folder.iterdir())
    lineage = assert_valid_artifact(final)
    assert [x.strip().splitlines()[-1] for x in logs] == [str(final), str(final)]
    assert unfinished_final_dirs(home.artifacts_dir) == []
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        materializations = instance.fetch_materializations(dg.AssetKey("training_dataset"), limit=10).records
    assert sum(r.status == dg.DagsterRunStatus.SUCCESS for r in runs) == 3  # base_model + the two
    assert len(materializations) == 2
    assert {m.asset_materialization.metadata["artifact_path"].value for m in materializations} == {str(final)}
    # The run whose rename lost reports the winner's lineage, not its own discarded copy.
    assert {m.asset_materialization.metadata["kept"].value for m in materializations} == {lineage["info"]["kept"]}


def test_stale_temporary_folders_of_dead_local_processes_are_removed_others_kept(tmp_path):
    store = ArtifactStore(tmp_path)
    folder = tmp_path / "thing"
    folder.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    names = {
        "dead": f".tmp-k1-{host_id()}-{dead.pid}-0123abcd",
        "alive": f".tmp-k1-{host_id()}-{os.getppid()}-0123abcd",
        "other_host": f".tmp-k1-{'0' * 8 if host_id() != '0' * 8 else '1' * 8}-{dead.pid}-0123abcd",
        "old_format": ".tmp-k1-0123abcd",
    }
    for name in names.values():
        (folder / name).mkdir()
        (folder / name / "partial.bin").write_bytes(b"\0" * 10)
    assert store.find("thing", "k1") is None  # a temporary folder is never an artifact
    with store.write("thing", "k2", inputs=[], config={}, code_version="1") as out:
        (out.dir / "x.txt").write_text("x")
    left = {p.name for p in folder.iterdir()}
    assert names["dead"] not in left
    assert {names["alive"], names["other_host"], names["old_format"], "k2"} == left

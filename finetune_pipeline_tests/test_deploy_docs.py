"""docs/kubernetes.md stays true: its configs load, match deploy/dagster.yaml, and only artifacts take a URL."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from finetune_pipeline.lib import PROJECT_ROOT
from finetune_pipeline.lib.config import ConfigError, _merge, load_config
from finetune_pipeline.lib.training.pod import pod_run_args

DOC = PROJECT_ROOT / "docs" / "kubernetes.md"


def _yaml_blocks() -> list[dict]:
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.S)]


def _block_with(key: str, without: str | None = None) -> dict:
    [block] = [b for b in _yaml_blocks() if key in b and (without is None or without not in b)]
    return block


def test_the_documented_pipeline_config_loads_with_shared_volume_paths(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(_block_with("artifacts_root", without="artifacts_storage_options")))
    cfg = load_config(path)
    assert cfg.artifacts_dir == Path("/mnt/finetune/artifacts")
    assert cfg.model_cache_dir == Path("/mnt/finetune/model_cache")
    assert cfg.raw_dir == Path("/mnt/finetune/raw")
    # Training on its own pod: the shared volume holds everything the pod reads and writes.
    train = cfg.train
    assert train.runner == "k8s" and train.pod.gpus >= 1
    mount = Path(train.pod.mount_path)
    assert mount in cfg.artifacts_dir.parents and mount in cfg.model_cache_dir.parents
    args = pod_run_args(train, cfg.artifacts_dir / "lora_adapter" / ".work-0123" / "spec.json")
    assert args["image"] == train.pod.image
    assert args["base_pod_spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_the_documented_object_storage_changes_load_on_top_of_it(tmp_path):
    base = _block_with("artifacts_root", without="artifacts_storage_options")
    changes = _block_with("artifacts_storage_options")
    assert set(changes) == {"artifacts_root", "artifacts_mirror", "artifacts_storage_options", "train"}  # config only
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(_merge(base, changes)))
    cfg = load_config(path)
    assert cfg.artifacts_url == changes["artifacts_root"] and cfg.artifacts_url.startswith("s3://")
    assert Path(changes["artifacts_mirror"]).is_absolute() and Path(changes["artifacts_mirror"]) in cfg.artifacts_dir.parents
    # The training pod of a detached spec (one that names the bucket): no volume, its service account.
    train = cfg.train
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"remote": {"url": cfg.artifacts_url, "pull": []}, "train": cfg.section("train")}))
    args = pod_run_args(train, spec)
    assert args["base_pod_spec"]["service_account_name"] == changes["train"]["pod"]["service_account"]
    assert [v["name"] for v in args["base_pod_spec"]["volumes"]] == ["dshm"]
    assert json.loads(args["command"][-1])["remote"]["url"] == cfg.artifacts_url


def test_documented_helm_values_match_the_shipped_production_instance():
    helm = _block_with("runLauncher")
    shipped = yaml.safe_load((PROJECT_ROOT / "deploy" / "dagster.yaml").read_text())
    assert helm["runLauncher"]["type"] == "K8sRunLauncher"
    retries, monitoring = helm["dagsterDaemon"]["runRetries"], helm["dagsterDaemon"]["runMonitoring"]
    assert retries["enabled"] is shipped["run_retries"]["enabled"] is True
    assert retries["maxRetries"] == shipped["run_retries"]["max_retries"]
    assert retries["retryOnAssetOrOpFailure"] == shipped["run_retries"]["retry_on_asset_or_op_failure"]
    assert monitoring["enabled"] is shipped["run_monitoring"]["enabled"] is True
    assert monitoring["maxResumeRunAttempts"] == shipped["run_monitoring"]["max_resume_run_attempts"]
    assert monitoring["startTimeoutSeconds"] == shipped["run_monitoring"]["start_timeout_seconds"]
    queued = helm["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert queued["maxConcurrentRuns"] == shipped["concurrency"]["runs"]["max_concurrent_runs"]
    # No password in the values: it comes from a Secret.
    assert "postgresqlPassword" not in helm["postgresql"] and helm["generatePostgresqlPasswordSecret"] is False


@pytest.mark.parametrize("field, values", [
    ("model_cache", {"model_cache": "gs://bucket/cache"}),
    ("data.raw_dir", {"data": {"raw_dir": "az://container/raw"}}),
])
def test_urls_other_than_artifacts_root_are_refused_naming_file_and_field(tmp_path, field, values):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert str(path) in message and f"{field} is " in message
    assert "must be a local folder" in message and "docs/kubernetes.md" in message

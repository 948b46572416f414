"""Artifacts on object storage: a real S3-compatible server (moto_server, its own process) on loopback.

Each "machine" is a separate local mirror of the same bucket; wiping a mirror
is a fresh pod. Credentials come from the environment, as in production.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import dagster as dg
import pytest
import yaml

from finetune_pipeline import cli
from finetune_pipeline.lib.config import ConfigError, load_config
from finetune_pipeline.lib.storage.artifacts import ArtifactStore
from finetune_pipeline.lib.storage.object_store import RemoteArtifactError, RemoteArtifacts
from finetune_pipeline.lib.versions.promotion import PromotionStore
from finetune_pipeline.lib.versions.registry import Registry
from finetune_pipeline.lib.versions.version import ArtifactAddress
from finetune_pipeline_tests.helpers import SAMPLE_RAW, TRAIN_AND_MERGE, materialized, write_config
from finetune_pipeline_tests.local_servers import (
    free_port,
    start_group,
    stop_group,
    wait_until,
)

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test-key-id", "AWS_SECRET_ACCESS_KEY": "test-secret-value",
               "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """An S3 endpoint (moto_server) and a bucket; yields (endpoint_url, bucket)."""
    moto = Path(sys.executable).parent / "moto_server"
    port = free_port()
    log = tmp_path_factory.mktemp("s3") / "moto.log"
    proc = start_group([str(moto), "-H", "127.0.0.1", "-p", str(port)], log)
    endpoint = f"http://127.0.0.1:{port}"
    old = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    try:
        import s3fs

        fs = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)

        def bucket_made():
            try:
                fs.mkdir("artifacts-bucket")
                return True
            except OSError:
                return False

        wait_until(bucket_made, 30, "moto_server to accept requests", interval_s=0.3, log=log)
        yield endpoint, "artifacts-bucket"
    finally:
        stop_group(proc)
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def _bucket_fs(endpoint):
    import s3fs

    return s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)


def _stores(s3, tmp_path, *machines):
    endpoint, bucket = s3
    url = f"s3://{bucket}/{uuid.uuid4().hex[:8]}"
    return url, [ArtifactStore(tmp_path / m, RemoteArtifacts(url, tmp_path / m, {"endpoint_url": endpoint}))
                 for m in machines]


def _write(store, key, content: str, asset="dataset"):
    with store.write(asset, key, inputs=[], config={"c": 1}, code_version="1") as out:
        (out.dir / "nested").mkdir()
        (out.dir / "nested" / "rows.jsonl").write_text(content)
        (out.dir / "weights.bin").write_bytes(content.encode() * 100)
        out.info["content"] = content
    return out


@pytest.mark.slow
def test_published_on_one_machine_is_a_cache_hit_on_another(s3, tmp_path):
    url, (a, b) = _stores(s3, tmp_path, "machine_a", "machine_b")
    written = _write(a, "k1", "hello")
    assert written.ref.cache_hit is False and written.ref.remote["url"] == url

    # The bucket: payload under files-<sha256 of lineage>, lineage.json the commit.
    fs = _bucket_fs(s3[0])
    prefix = url.removeprefix("s3://")
    names = sorted(p.removeprefix(f"{prefix}/dataset/k1/") for p in fs.find(f"{prefix}/dataset/k1"))
    assert names[-1] == "lineage.json" and len(names) == 3
    assert names[0].startswith("files-") and names[0].endswith("/nested/rows.jsonl")

    assert not (tmp_path / "machine_b" / "dataset" / "k1").exists()
    hit = b.find("dataset", "k1")
    assert hit is not None and hit.cache_hit and hit.info == {"content": "hello"}
    assert not Path(hit.path).exists()  # found by its lineage.json alone; pulled on first use
    assert (hit.dir / "nested" / "rows.jsonl").read_text() == "hello"
    assert (hit.dir / "lineage.json").read_bytes() == (Path(written.ref.path) / "lineage.json").read_bytes()
    assert b.find("dataset", "absent") is None
    # A ref carried to a fresh machine (the mirror wiped) pulls itself back.
    shutil.rmtree(tmp_path / "machine_b")
    assert (hit.ensure_local().dir / "weights.bin").read_bytes() == b"hello" * 100


@pytest.mark.slow
def test_a_tampered_bucket_object_is_refused_naming_it(s3, tmp_path):
    url, (a, b) = _stores(s3, tmp_path, "a", "b")
    _write(a, "k1", "original")
    fs = _bucket_fs(s3[0])
    prefix = url.removeprefix("s3://")
    [rows] = [p for p in fs.find(f"{prefix}/dataset/k1") if p.endswith("rows.jsonl")]
    fs.pipe_file(rows, b"changed")
    with pytest.raises(RemoteArtifactError, match=r"dataset/k1/files-[0-9a-f]+/nested/rows.jsonl: sha256 differs"):
        b.find("dataset", "k1").dir
    # Nothing half-pulled is left under the final name.
    assert not (tmp_path / "b" / "dataset" / "k1").exists()
    assert [p.name for p in (tmp_path / "b" / "dataset").iterdir()] == []


@pytest.mark.slow
def test_two_machines_writing_the_same_key_keep_one_complete_artifact(s3, tmp_path):
    url, (a, b, c) = _stores(s3, tmp_path, "a", "b", "c")
    # Both start building the same recipe; b publishes first. a then finds the key taken and keeps b's.
    with a.write("dataset", "same", inputs=[], config={}, code_version="1") as out_a:
        (out_a.dir / "rows.jsonl").write_text("from a")
        out_a.info["by"] = "a"
        out_b = _write(b, "same", "from b")
    assert out_a.lost_race and out_a.ref.info == {"content": "from b"}
    assert (Path(out_a.ref.path) / "nested" / "rows.jsonl").read_text() == "from b"
    assert not (Path(out_a.ref.path) / "rows.jsonl").exists()
    assert out_b.lost_race is False

    # Both uploads land at once (neither saw the other): each payload is under its own prefix, so the
    # lineage that wins names a complete payload, and a third machine reads a consistent artifact.
    remote = b.remote
    for who in ("x", "y"):
        folder = tmp_path / f"upload_{who}"
        folder.mkdir()
        (folder / "rows.jsonl").write_text(f"from {who}")
        outputs = {"rows.jsonl": __import__("hashlib").sha256(f"from {who}".encode()).hexdigest()}
        (folder / "lineage.json").write_text(json.dumps({"asset": "dataset", "key": "raced", "outputs": outputs,
                                                         "info": {"by": who}}))
        remote.push(folder, "dataset", "raced")
    pulled = c.find("dataset", "raced")
    assert pulled.info == {"by": "y"} and (pulled.dir / "rows.jsonl").read_text() == "from y"


KILLED_WRITER = """
import sys, time
from pathlib import Path
from finetune_pipeline.lib.storage.artifacts import ArtifactStore
from finetune_pipeline.lib.storage.object_store import RemoteArtifacts
url, mirror, endpoint = sys.argv[1:4]
store = ArtifactStore(Path(mirror), RemoteArtifacts(url, Path(mirror), {"endpoint_url": endpoint}))
with store.write("big", "k", inputs=[], config={}, code_version="1") as out:
    for i in range(600):
        (out.dir / f"part-{i:04d}.bin").write_bytes(bytes([i % 256]) * 4096)
print("written", flush=True)
"""


@pytest.mark.slow
def test_a_writer_killed_during_upload_leaves_nothing_visible(s3, tmp_path):
    endpoint, _ = s3
    url, (reader,) = _stores(s3, tmp_path, "reader")
    fs = _bucket_fs(endpoint)
    prefix = url.removeprefix("s3://")
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, url, str(tmp_path / "writer"), endpoint],
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def uploading():
        try:
            return len(fs.find(f"{prefix}/big/k", refresh=True)) >= 5
        except FileNotFoundError:
            return False

    wait_until(uploading, 120, "the writer to start uploading", interval_s=0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    uploaded = fs.find(f"{prefix}/big/k", refresh=True)
    assert len(uploaded) < 600 and not any(p.endswith("lineage.json") for p in uploaded)
    assert reader.find("big", "k") is None  # a payload without its lineage is not an artifact
    assert not (tmp_path / "writer" / "big" / "k").exists()

    # The next run completes, and what is published is whole.
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, url, str(tmp_path / "writer"), endpoint],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    hit = reader.find("big", "k")
    assert hit is not None and len(list(hit.dir.glob("part-*.bin"))) == 600
    # The dead writer's temporary folder was removed by the next write on its machine.
    assert [p.name for p in (tmp_path / "writer" / "big").iterdir()] == ["k"]


@pytest.mark.slow
def test_versions_and_champion_live_in_the_bucket(s3, tmp_path):
    url, (a, b) = _stores(s3, tmp_path, "a", "b")
    Registry(a.root, a.remote).register("lora-abc", "lora_merged", weights=".",
                                       artifact=ArtifactAddress(asset="merged_model", key="m"))
    reg_b = Registry(b.root, b.remote)
    assert reg_b.keys() == ["lora-abc"] and reg_b.get("lora-abc").kind == "lora_merged"
    with pytest.raises(KeyError, match="not registered"):
        reg_b.get("lora-zzz")

    from finetune_pipeline.lib.versions.promotion import Decision

    PromotionStore(a.root, a.remote).record(
        Decision(champion="lora-abc", previous=None, promoted=True, primary_metric="exact_match", margin=0.0,
                 eval_set="e1", scores={"lora-abc": 0.5}, reasons=["first"], run_id="r1"), reg_b.get("lora-abc"))
    on_b = PromotionStore(b.root, b.remote)
    assert on_b.champion()["version"] == "lora-abc"
    assert [h["champion"] for h in on_b.history()] == ["lora-abc"]


def test_config_takes_a_url_artifacts_root_and_keeps_credentials_out(tmp_path):
    path = write_config(tmp_path, SAMPLE_RAW, artifacts_root="s3://bucket/team/artifacts",
                        artifacts_storage_options={"endpoint_url": "http://127.0.0.1:9000"})
    cfg = load_config(path)
    assert cfg.artifacts_url == "s3://bucket/team/artifacts"
    assert cfg.artifacts_dir.parent == (PROJECT_MIRROR := (tmp_path / "data" / "artifacts_mirror"))
    assert cfg.artifacts_dir.name.startswith("s3_bucket_team_artifacts-") and PROJECT_MIRROR in cfg.artifacts_dir.parents

    def refused(**values):
        p = write_config(tmp_path, SAMPLE_RAW, **values)
        with pytest.raises(ConfigError) as e:
            load_config(p)
        return str(e.value)

    msg = refused(artifacts_root="s3://b/a", artifacts_storage_options={"key": "AKIA...", "secret": "x"})
    assert "['key', 'secret']" in msg and "environment" in msg and "config.yaml" in msg
    assert "['aws_secret_access_key']" in refused(
        artifacts_root="s3://b/a", artifacts_storage_options={"client_kwargs": {"aws_secret_access_key": "x"}})
    assert "model_cache is 's3://b/cache'" in refused(model_cache="s3://b/cache")
    assert "no fsspec backend for nosuch://" in refused(artifacts_root="nosuch://b/a")
    assert "artifacts_root is a folder" in refused(artifacts_storage_options={"endpoint_url": "http://x"})


@pytest.mark.slow
def test_pipeline_in_dagster_on_a_bucket_survives_fresh_pods(s3, tmp_path, monkeypatch, capsys):
    """Train, evaluate, promote with artifacts on S3; every later run starts on an empty mirror."""
    endpoint, bucket = s3
    url = f"s3://{bucket}/pipeline-{uuid.uuid4().hex[:6]}"
    config_path = write_config(tmp_path, SAMPLE_RAW, artifacts_root=url, artifacts_mirror=str(tmp_path / "mirror"),
                               artifacts_storage_options={"endpoint_url": endpoint},
                               serving={"mode": "lora"})  # the spec reads the adapter's rank: a pull
    monkeypatch.setenv("FINETUNE_PIPELINE_CONFIG", str(config_path))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    cfg = load_config(config_path)
    mirror = cfg.artifacts_dir

    from finetune_pipeline.definitions import build_definitions

    defs = build_definitions(cfg)
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as instance:
        result = defs.resolve_job_def("train_and_merge").execute_in_process(instance=instance)
        assert materialized(result) == TRAIN_AND_MERGE
        lora = result.output_for_node("merged_model").info["version_key"]
        fs = _bucket_fs(endpoint)
        prefix = url.removeprefix("s3://")
        published = {p.removeprefix(prefix + "/").split("/")[0] for p in fs.find(prefix, refresh=True)}
        assert {"raw_examples", "training_dataset", "base_model", "lora_adapter", "merged_model",
                "model_versions", "_dagster_refs"} <= published
        # Run outputs are JSON refs in the bucket, never pickles.
        merged_key = result.output_for_node("merged_model").key
        ref_json = json.loads(fs.cat_file(f"{prefix}/_dagster_refs/merged_model.json"))
        assert ref_json["__artifact_ref__"]["key"] == merged_key
        # The UI links each materialization to its place in the bucket.
        meta = instance.fetch_materializations(dg.AssetKey("merged_model"), limit=1).records[0].asset_materialization
        assert meta.metadata["artifact_url"].value == f"{url}/merged_model/{merged_key}"

        # A fresh pod evaluates the new version: the eval set ref comes from the bucket, and only what the
        # eval needs (the eval set, the merged model) is pulled; the adapter and raw data are not.
        shutil.rmtree(mirror)
        eval_job = defs.resolve_job_def("evaluate_version")
        assert materialized(defs.resolve_job_def("evaluate_version").execute_in_process(
            instance=instance, partition_key=lora)) == [f"general_eval[{lora}]", f"model_eval[{lora}]"]
        assert (mirror / "merged_model").is_dir() and (mirror / "eval_set").is_dir()
        assert not (mirror / "lora_adapter").exists() and not (mirror / "raw_examples").exists()
        base = sorted(instance.get_dynamic_partitions("model_versions"))[0]
        assert base.startswith("base-") and materialized(
            eval_job.execute_in_process(instance=instance, partition_key=base)) == [f"general_eval[{base}]", f"model_eval[{base}]"]

        # Another fresh pod: the nightly retrain with nothing changed is a cache hit from the bucket.
        shutil.rmtree(mirror)
        again = defs.resolve_job_def("train_and_merge").execute_in_process(instance=instance)
        assert materialized(again) == TRAIN_AND_MERGE and again.output_for_node("lora_adapter").cache_hit
        logs = [e.user_message for e in instance.all_logs(again.run_id)]
        assert any("no training needed" in m for m in logs) and not any("step 1/" in m for m in logs)
        # Cache hits read lineage.json only; files are pulled where a step (or check) opens them.
        assert not (mirror / "raw_examples").exists()

        shutil.rmtree(mirror)
        assert materialized(defs.resolve_job_def("promote").execute_in_process(instance=instance)) == [
            "champion", "leaderboard", "serving_spec"]
        champion = json.loads(fs.cat_file(f"{prefix}/promotion/champion.json"))
        assert champion["version"] in (lora, base)
        [spec_key] = [p.split("/")[-2] for p in fs.find(f"{prefix}/serving_spec") if p.endswith("lineage.json")]
        assert (mirror / "serving_spec" / spec_key / "serving_spec.json").is_file()

    # A serving host fetches a version before running the spec's command: merged weights, base and adapter.
    shutil.rmtree(mirror)
    assert cli.main(["pull", lora, "--config", str(config_path)]) == 0
    assert f"{lora}: weights at {mirror}" in capsys.readouterr().out
    for asset in ("merged_model", "base_model", "lora_adapter"):
        assert len(list((mirror / asset).iterdir())) == 1, asset
    assert list((mirror / "merged_model").glob("*/model*.safetensors"))

    # Lineage from a fresh machine reads every lineage.json from the bucket.
    shutil.rmtree(mirror)
    assert cli.main(["lineage", lora, "--config", str(config_path)]) == 0
    text = capsys.readouterr().out
    assert "raw_examples " in text and "support_tickets.jsonl" in text and "has no lineage.json" not in text
    assert not (mirror / "lora_adapter").exists()  # read, not pulled
    assert yaml.safe_load(config_path.read_text())["artifacts_root"] == url


@pytest.mark.slow
def test_a_training_pod_sharing_no_folder_with_the_run_trains_through_the_bucket(s3, tmp_path, caplog):
    """train.runner: k8s with artifacts on S3: the pod's command carries the spec, the pod pulls its inputs
    into its own mirror and uploads the adapter; the run publishes it. The "pod" here is the very command
    PipesK8sClient would start, run as a process whose mirror is another folder."""
    from finetune_pipeline.lib import stages
    from finetune_pipeline.lib.training.detached import MIRROR_ENV
    from finetune_pipeline.lib.training.pod import pod_run_args

    endpoint, bucket = s3
    url = f"s3://{bucket}/pod-{uuid.uuid4().hex[:6]}"
    config_path = write_config(
        tmp_path, SAMPLE_RAW, artifacts_root=url, artifacts_mirror=str(tmp_path / "run_mirror"),
        artifacts_storage_options={"endpoint_url": endpoint},
        train={"runner": "k8s", "pod": {"image": "registry.example.com/finetune:1", "gpus": 0,
                                        "env_from_secret": "finetune-secrets"}})
    cfg = load_config(config_path)
    raw = stages.raw_examples(cfg)
    base = stages.base_model(cfg)
    dataset = stages.training_dataset(cfg, raw, base)
    pod_mirror = tmp_path / "pod_mirror"
    pods = []

    def launch_pod(spec_path: Path) -> dict:
        args = pod_run_args(cfg.train, spec_path)
        pods.append(args)
        env = {**os.environ, MIRROR_ENV: str(pod_mirror)}
        proc = subprocess.run([sys.executable, *args["command"][1:]], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    caplog.set_level(logging.INFO, logger="finetune_pipeline")
    ref = stages.lora_adapter(cfg, base, dataset, launch_pod)
    logs = caplog.messages

    # The pod: no shared volume, credentials from the Secret, the spec inline with what to pull.
    [args] = pods
    pod_spec = args["base_pod_spec"]
    assert [v["name"] for v in pod_spec["volumes"]] == ["dshm"]
    assert pod_spec["containers"][0]["env_from"] == [{"secret_ref": {"name": "finetune-secrets"}}]
    spec = json.loads(args["command"][-1])
    assert spec["remote"]["pull"] == [["base_model", base.key], ["training_dataset", dataset.key]]
    # It pulled its inputs (the base model's weights travel in its artifact) into its own mirror...
    assert list((pod_mirror / "base_model" / base.key / "model").glob("*.safetensors"))
    assert (pod_mirror / "training_dataset" / dataset.key / "train.jsonl").is_file()
    [pod_output] = (pod_mirror / "lora_adapter").glob(".pod-output-*")
    assert (pod_output / "adapter_model.safetensors").is_file()
    # ...and the run got the adapter back, published it, and cleaned the exchange prefix up.
    assert any("file(s) back from the training pod" in m for m in logs)
    assert (ref.dir / "adapter_model.safetensors").read_bytes() == (pod_output / "adapter_model.safetensors").read_bytes()
    fs = _bucket_fs(endpoint)
    prefix = url.removeprefix("s3://")
    assert fs.exists(f"{prefix}/lora_adapter/{ref.key}/lineage.json")
    assert not fs.exists(f"{prefix}/lora_adapter/.pod-outputs") or not fs.find(f"{prefix}/lora_adapter/.pod-outputs")
    assert ref.info["steps"] == 4 and ref.info["uploaded_files"] >= 2
    # Another machine reuses it.
    other = ArtifactStore(tmp_path / "third", RemoteArtifacts(url, tmp_path / "third", {"endpoint_url": endpoint}))
    assert other.find("lora_adapter", ref.key).cache_hit


@pytest.mark.slow
def test_a_killed_training_pod_is_resumed_by_a_pod_on_another_node_from_the_bucket(s3, tmp_path):
    """The first pod is SIGKILLed once a checkpoint is in the bucket; the retry runs on a pod with an empty
    disk, downloads that checkpoint and finishes the same 8 steps."""
    from finetune_pipeline.lib import stages
    from finetune_pipeline.lib.training.detached import MIRROR_ENV
    from finetune_pipeline.lib.training.pod import pod_run_args

    endpoint, bucket = s3
    url = f"s3://{bucket}/resume-{uuid.uuid4().hex[:6]}"
    config_path = write_config(
        tmp_path, SAMPLE_RAW, artifacts_root=url, artifacts_mirror=str(tmp_path / "run_mirror"),
        artifacts_storage_options={"endpoint_url": endpoint},
        data={"val_fraction": 0.03, "test_fraction": 0.03},
        train={"max_steps": 8, "batch_size": 2, "eval_steps": 2, "save_steps": 2, "logging_steps": 1,
               "early_stopping_patience": 0, "learning_rate": 0.005, "runner": "k8s",
               "pod": {"image": "registry.example.com/finetune:1", "gpus": 0}})
    cfg = load_config(config_path)
    base = stages.base_model(cfg)
    dataset = stages.training_dataset(cfg, stages.raw_examples(cfg), base)

    def pod(node: str, kill_after_upload: bool):
        def launch(spec_path: Path) -> dict:
            command = [sys.executable, *pod_run_args(cfg.train, spec_path)["command"][1:]]
            env = {**os.environ, MIRROR_ENV: str(tmp_path / node)}
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=open(tmp_path / f"{node}.err", "w"), text=True, env=env)
            lines = []
            for line in proc.stdout:
                lines.append(line)
                if kill_after_upload and line.startswith("checkpoint uploaded:"):
                    os.kill(proc.pid, signal.SIGKILL)
                    break
            proc.wait()
            if proc.returncode != 0:
                raise RuntimeError(f"training pod on {node} ended with {proc.returncode}")
            pod_logs[node] = lines
            return json.loads(lines[-1])
        return launch

    pod_logs: dict[str, list[str]] = {}
    with pytest.raises(RuntimeError, match="ended with -9"):
        stages.lora_adapter(cfg, base, dataset, pod("node_a", kill_after_upload=True))
    fs = _bucket_fs(endpoint)
    prefix = url.removeprefix("s3://")
    [state] = [p for p in fs.find(f"{prefix}/lora_adapter", refresh=True) if p.endswith("trainer_state.json")]
    uploaded_step = int(state.split("/checkpoint-")[1].split("/")[0])
    assert uploaded_step >= 2
    assert not [p for p in fs.find(f"{prefix}/lora_adapter") if p.endswith("/lineage.json")]  # nothing published
    assert not (tmp_path / "node_b").exists()  # the retry's node has never seen this training

    ref = stages.lora_adapter(cfg, base, dataset, pod("node_b", kill_after_upload=False))
    assert any(f"resuming from checkpoint-{uploaded_step}" in line for line in pod_logs["node_b"])
    assert ref.info["resumed_from_step"] == uploaded_step and ref.info["steps"] == 8
    # The data order covers every step once, across the two pods.
    order = [json.loads(line)["step"] for line in (ref.dir / "examples_seen.jsonl").read_text().splitlines()]
    assert order == list(range(1, 9))
    # Once published, the checkpoints are gone from the bucket.
    assert not [p for p in fs.find(f"{prefix}/lora_adapter", refresh=True) if "/.work-" in p]

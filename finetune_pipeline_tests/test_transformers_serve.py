"""The OpenAI-compatible eval backend against a real `transformers serve` on loopback.

The server is started with the very command `serving_spec` writes for a merged
LoRA version (on a free port), and must give the same greedy answers as the
in-process transformers backend, both for a local version (eval.backend: openai)
and for a version of kind `openai` asked for by its remote id.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from finetune_pipeline.lib import stages
from finetune_pipeline.lib.config import ServingConfig, load_config
from finetune_pipeline.lib.evaluation.backends import BackendError
from finetune_pipeline.lib.evaluation.report import read_predictions
from finetune_pipeline.lib.models.serving_env import serving_python_or_default
from finetune_pipeline.lib.storage.artifacts import ArtifactStore
from finetune_pipeline.lib.versions import kinds, serving
from finetune_pipeline.lib.versions.version import ModelVersion
from finetune_pipeline.lib.versions.registry import Registry
from finetune_pipeline_tests.local_servers import free_port

# Both use the three_versions fixture (two trainings); one starts `transformers serve`.
pytestmark = pytest.mark.slow

STARTUP_TIMEOUT_S = 120


@contextmanager
def transformers_serve(command: list[str], port: int, log: Path):
    # The command names the `transformers` script; use the one of this environment.
    command = [str(Path(sys.executable).parent / "transformers"), *command[1:]]
    with open(log, "w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + STARTUP_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"transformers serve not ready after {STARTUP_TIMEOUT_S}s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@pytest.mark.timeout(600)
def test_openai_backend_against_transformers_serve_matches_in_process(three_versions, tmp_path):
    versions = three_versions
    artifacts = tmp_path / "artifacts"  # this test's own copy of the versions, its own registry and evals
    shutil.copytree(versions.artifacts, artifacts)
    registry = Registry(artifacts)
    merged = registry.get(versions.lora_a)
    merged_dir = str(merged.weights_dir(ArtifactStore(artifacts)))
    # A remote version: what OpenAI fine-tuning registers, with the server's model name as its remote id.
    registry.register("ft-served", "openai", remote_id=merged_dir, artifact=merged.artifact,
                      info={"base_model": "tiny-random", "trained_tokens": 1000})

    port = free_port()
    command = serving.transformers_serve_command(Path(merged_dir), "127.0.0.1", port)
    assert command == ["transformers", "serve", merged_dir, "--host", "127.0.0.1", "--port", str(port),
                       "--device", "cpu"]
    local = load_config(versions.config_a, {"artifacts_root": str(artifacts), "eval": {"batch_size": 1}})
    expected = stages.model_eval(local, versions.lora_a, versions.eval_set)
    assert expected.info["backend"]["backend"] == "transformers"

    with transformers_serve(command, port, tmp_path / "serve.log") as base_url:
        endpoint = {"base_url": base_url, "concurrency": 2, "timeout_s": 60}
        via_server = load_config(versions.config_a, {"artifacts_root": str(artifacts), "eval": {
            "backend": "openai", "openai": {**endpoint, "model_name": "{path}"}}})
        served = stages.model_eval(via_server, versions.lora_a, versions.eval_set)
        # kind "openai" always goes through the endpoint, by remote id, whatever eval.backend says.
        remote_cfg = load_config(versions.config_a, {"artifacts_root": str(artifacts),
                                                     "eval": {"openai": endpoint}})
        remote = stages.model_eval(remote_cfg, "ft-served", versions.eval_set)
        # A name the server does not serve is a clear error naming endpoint and model.
        wrong = load_config(versions.config_a, {"artifacts_root": str(artifacts), "eval": {
            "backend": "openai", "openai": {**endpoint, "model_name": "{key}"}}})
        with pytest.raises(BackendError, match=f"refused model '{versions.lora_a}': HTTP 4"):
            stages.model_eval(wrong, versions.lora_a, versions.eval_set)

    assert served.info["backend"] == {"backend": "openai", "base_url": base_url, "model": merged_dir}
    assert remote.info["backend"]["model"] == merged_dir and remote.info["kind"] == "openai"
    want = [r.prediction for r in read_predictions(expected.dir)]
    assert len(want) == 6 and any(want)
    assert [r.prediction for r in read_predictions(served.dir)] == want
    assert [r.prediction for r in read_predictions(remote.dir)] == want
    assert served.info["metrics"] == expected.info["metrics"]


def test_serving_spec_commands_for_merged_and_lora_modes(three_versions, tmp_path):
    store = ArtifactStore(three_versions.artifacts)
    merged = Registry(three_versions.artifacts).get(three_versions.lora_b)
    kind = kinds.get(merged.kind)
    spec = kind.serving_spec(merged, store, ServingConfig(port=8001, tensor_parallel_size=2))
    # vLLM's server module run by the serving environment's python (scripts/setup.sh serve).
    vllm = [str(serving_python_or_default()), "-m", "vllm.entrypoints.openai.api_server"]
    assert spec.vllm == [*vllm, "--model", str(merged.weights_dir(store)), "--served-model-name",
                         three_versions.lora_b, "--host", "0.0.0.0", "--port", "8001", "--tensor-parallel-size", "2"]
    assert spec.vllm_env == {"VLLM_CPU_KVCACHE_SPACE": "1"}
    spec.write(tmp_path)
    script = (tmp_path / "serve_vllm.sh").read_text()
    assert 'export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"' in script
    assert f'exec "${{FINETUNE_PIPELINE_SERVE_PYTHON:-{vllm[0]}}}" -m vllm.entrypoints.openai.api_server' in script
    lora = kind.serving_spec(merged, store, ServingConfig(mode="lora", vllm_args=["--max-loras", "4"])).vllm
    inputs = {i["asset"]: i["key"] for i in merged.lineage(store)["inputs"]}
    base_dir = serving.base_weights_dir(store, inputs["base_model"])
    adapter_dir = store.dir("lora_adapter", inputs["lora_adapter"])
    # --max-lora-rank 8: TRAIN_B's rank, read from adapter_config.json
    assert lora == [*vllm, "--model", str(base_dir), "--served-model-name", three_versions.base, "--enable-lora",
                    "--lora-modules", f"{three_versions.lora_b}={adapter_dir}", "--max-lora-rank", "8",
                    "--host", "0.0.0.0", "--port", "8000", "--tensor-parallel-size", "1", "--max-loras", "4"]
    assert serving.vllm_lora_rank(4) == 8 and serving.vllm_lora_rank(17) == 32
    remote = ModelVersion(key="ft-x", kind="openai", remote_id="ft:gpt-4o-mini:o::x")
    openai_spec = kinds.get("openai").serving_spec(remote, store, ServingConfig())
    assert openai_spec.vllm is None and "served by OpenAI" in openai_spec.note and openai_spec.model == remote.remote_id

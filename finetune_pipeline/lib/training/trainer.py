"""The Trainer subclass and callbacks of the training engine (imported only inside the child).

- `EngineTrainer`: logs which examples each rank trained on at each step
  (the resume and multi-process tests read it) and counts padded positions.
- `ProgressCallback`: step i/N, loss, non-pad tokens/s and ETA, logged.
- `CheckpointReport`: says when a checkpoint is complete on disk.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from pathlib import Path

from transformers import Trainer, TrainerCallback

log = logging.getLogger(__name__)


class EngineTrainer(Trainer):
    """Logs the example ids of each training micro-batch and counts padded positions."""

    seen_log: Path | None = None
    start_step: int = 0
    _micro = 0
    _tokens = 0
    _positions = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        ids = inputs.pop("example_ids", None)
        if model.training:
            self._count(inputs)
            if ids is not None and self.seen_log is not None:
                self._log_ids(ids.tolist())
        return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)

    def _count(self, inputs) -> None:
        mask = inputs.get("attention_mask")
        self._positions += inputs["input_ids"].numel()
        self._tokens += int(mask.sum()) if mask is not None else inputs["input_ids"].numel()

    def _log_ids(self, ids: list[int]) -> None:
        step = self.state.global_step + 1
        self._micro = self._micro + 1 if getattr(self, "_last_step", None) == step else 0
        self._last_step = step
        with open(self.seen_log, "a") as f:
            f.write(json.dumps({"start": self.start_step, "step": step, "micro": self._micro, "ids": ids}) + "\n")

    def padding_fraction(self) -> float:
        return round(1 - self._tokens / self._positions, 4) if self._positions else 0.0


class CheckpointReport(TrainerCallback):
    """Says when a checkpoint is complete on disk (the Trainer calls on_save after writing it all)."""

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            log.info("checkpoint saved: checkpoint-%d", state.global_step)


class ProgressCallback(TrainerCallback):
    """Step i/N, loss, non-pad tokens/s and ETA, at every log and at least every 30 s.

    A step can take longer than 30 s (a big batch on a CPU), so a background
    thread repeats the last line, marked with the running step, whenever the
    log has been quiet for `every_seconds`. Rank 0 only.
    """

    def __init__(self, every_seconds: float = 30.0):
        self.every = every_seconds
        self.last_loss: float | None = None
        self.tokens_at_start = 0
        self._start_step = 0
        self._start = self._last = time.time()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        # On a resume the state is already the checkpoint's: measure this attempt only.
        self._start = self._last = time.time()
        self._start_step = state.global_step
        self.tokens_at_start = int(state.num_input_tokens_seen)
        if state.is_world_process_zero and self._thread is None:
            self._thread = threading.Thread(target=self._beat, args=(state,), daemon=True, name="progress")
            self._thread.start()

    def on_train_end(self, args, state, control, **kwargs):
        self._stop.set()

    def _beat(self, state) -> None:
        while not self._stop.wait(min(self.every / 3, 5.0)):
            if time.time() - self._last >= self.every:
                self._emit(self._line(state, f" (step {state.global_step + 1} running)"))

    def _emit(self, line: str) -> None:
        with self._lock:  # the training thread and the heartbeat both emit
            self._last = time.time()
            log.info(line)

    def _line(self, state, extra: str = "") -> str:
        elapsed = time.time() - self._start
        done = state.global_step - self._start_step
        eta = elapsed / done * max(state.max_steps - state.global_step, 0) if done else float("nan")
        tps = (state.num_input_tokens_seen - self.tokens_at_start) / elapsed if elapsed > 0 else 0.0
        loss = f"loss {self.last_loss:.4f}" if self.last_loss is not None else "loss -"
        return (f"step {state.global_step}/{state.max_steps} {loss}{extra} "
                f"{tps:,.0f} tokens/s ETA {_mmss(eta)}")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:
            return
        logs = logs or {}
        extra = ""
        if "loss" in logs:
            self.last_loss = float(logs["loss"])
        if "eval_loss" in logs:
            extra = f" eval_loss {logs['eval_loss']:.4f}"
        if "loss" in logs or extra:
            self._emit(self._line(state, extra))


def _mmss(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    return f"{m}:{s:02d}"

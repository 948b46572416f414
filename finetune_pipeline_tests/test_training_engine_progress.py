"""Progress you can watch: a line per logging step, and a heartbeat while a long step runs."""

from __future__ import annotations

import logging
import time

from transformers import TrainerState

from finetune_pipeline.lib.training.trainer import ProgressCallback


def _state(step: int, tokens: int) -> TrainerState:
    state = TrainerState(max_steps=10, global_step=step, num_input_tokens_seen=tokens)
    state.is_world_process_zero = True
    return state


def test_a_line_per_log_with_step_loss_tokens_per_second_and_eta(caplog):
    caplog.set_level(logging.INFO, logger="finetune_pipeline")
    progress = ProgressCallback()
    state = _state(0, 0)
    progress.on_train_begin(None, state, None)
    state.global_step, state.num_input_tokens_seen = 4, 4000
    progress.on_log(None, state, None, logs={"loss": 1.23456})
    progress.on_log(None, state, None, logs={"eval_loss": 0.98765})
    progress.on_train_end(None, state, None)
    lines = caplog.messages
    assert lines[0].startswith("step 4/10 loss 1.2346 ") and "tokens/s ETA " in lines[0]
    assert lines[1].startswith("step 4/10 loss 1.2346 eval_loss 0.9877 ")


def test_a_heartbeat_repeats_the_line_while_a_long_step_runs(caplog):
    caplog.set_level(logging.INFO, logger="finetune_pipeline")
    progress = ProgressCallback(every_seconds=0.1)
    state = _state(3, 300)  # resumed at step 3: tokens/s and ETA count this attempt only
    progress.on_train_begin(None, state, None)
    deadline = time.time() + 10
    while not caplog.messages and time.time() < deadline:
        time.sleep(0.05)
    progress.on_train_end(None, state, None)
    lines = caplog.messages
    assert lines, "no heartbeat while the step ran"
    assert lines[0].startswith("step 3/10 loss - (step 4 running) 0 tokens/s ETA ?")

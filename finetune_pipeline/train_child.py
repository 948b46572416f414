"""Entry point of the training child process: `python -m finetune_pipeline.train_child SPEC.json`.

Launched by the `lora_adapter` asset through Dagster Pipes; it reports progress
to the Dagster run log and hands its result back as a Pipes custom message.
Run by hand (no Pipes context), it prints progress to stdout instead, so the
same entry point works on a GPU pod or under `torchrun --nproc_per_node N` /
`accelerate launch`: there every rank trains, and rank 0 alone talks to
Dagster (one Pipes connection per run) or prints the result.
"""

from __future__ import annotations

import json
import logging
import sys

from finetune_pipeline.lib.training.engine import rank, train_model
from finetune_pipeline.lib.training.spec import TrainSpec


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m finetune_pipeline.train_child SPEC.json", file=sys.stderr)
        return 2
    spec = TrainSpec.load(argv[0])  # a file, or the spec's JSON itself
    if spec.remote is not None:  # on a pod that shares no folder with the run: inputs come from the bucket
        from finetune_pipeline.lib.training.detached import prepare

        spec = prepare(spec)

    from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

    if rank() != 0:  # one voice per run: the other ranks train quietly
        _train(spec)
        return 0
    if not PipesEnvVarParamsLoader().is_dagster_pipes_process():
        _log_to(lambda level, line: print(line, flush=True))
        result = _finish(spec, _train(spec))
        print(json.dumps(result))  # the last line of stdout is the result
        return 0
    with open_dagster_pipes() as pipes:
        _log_to(pipes.log.log)
        result = _finish(spec, _train(spec))
        pipes.report_custom_message(result)
    return 0


class _Forward(logging.Handler):
    def __init__(self, emit_line):
        super().__init__(logging.INFO)
        self.emit_line = emit_line

    def emit(self, record: logging.LogRecord) -> None:
        self.emit_line(record.levelno, self.format(record))


def _log_to(emit_line) -> None:
    """The engine's progress (the `finetune_pipeline` logger) goes to Dagster through Pipes, or to stdout."""
    logger = logging.getLogger("finetune_pipeline")
    logger.setLevel(logging.INFO)
    logger.addHandler(_Forward(emit_line))


def _train(spec: TrainSpec) -> dict:
    callbacks = []
    if spec.remote is not None:  # a retried pod may land anywhere: checkpoints go to the bucket
        from finetune_pipeline.lib.training.detached import checkpoint_upload

        callbacks.append(checkpoint_upload(spec))
    return train_model(spec, callbacks=callbacks)


def _finish(spec: TrainSpec, result: dict) -> dict:
    """Rank 0, after training: hand a detached pod's output back through the bucket."""
    if spec.remote is not None:
        from finetune_pipeline.lib.training.detached import upload_result

        result = {**result, "uploaded_files": upload_result(spec)}
    return result


if __name__ == "__main__":
    sys.exit(main())

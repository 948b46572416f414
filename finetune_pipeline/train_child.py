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

    if rank() != 0:
        _train(spec, report=lambda line: None)
        return 0
    if not PipesEnvVarParamsLoader().is_dagster_pipes_process():
        result = _finish(spec, _train(spec, report=lambda line: print(line, flush=True)))
        print(json.dumps(result))  # the last line of stdout is the result
        return 0
    with open_dagster_pipes() as pipes:
        result = _finish(spec, _train(spec, report=pipes.log.info))
        pipes.report_custom_message(result)
    return 0


def _train(spec: TrainSpec, report) -> dict:
    callbacks = []
    if spec.remote is not None:  # a retried pod may land anywhere: checkpoints go to the bucket
        from finetune_pipeline.lib.training.detached import checkpoint_upload

        callbacks.append(checkpoint_upload(spec, report))
    return train_model(spec, report=report, callbacks=callbacks)


def _finish(spec: TrainSpec, result: dict) -> dict:
    """Rank 0, after training: hand a detached pod's output back through the bucket."""
    if spec.remote is not None:
        from finetune_pipeline.lib.training.detached import upload_result

        result = {**result, "uploaded_files": upload_result(spec)}
    return result


if __name__ == "__main__":
    sys.exit(main())

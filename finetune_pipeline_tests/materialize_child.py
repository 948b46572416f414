"""A separate process that materializes the data assets in a real Dagster instance ($DAGSTER_HOME).

Used by test_crash_safety.py to make a kill or a race happen at a known point:
inside the training_dataset artifact write, after the payload is written and
before lineage.json and the rename.

    python -m finetune_pipeline_tests.materialize_child MODE SIGNAL_DIR

MODE `pause`: write half a line more, announce the temporary folder in
SIGNAL_DIR, then wait to be killed. MODE `barrier`: announce, then wait until
two processes have announced, so both are mid-write at once. MODE `plain`:
no interference. Prints the training_dataset artifact path as its last line.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import dagster as dg

from finetune_pipeline.lib.stages import data as stages


def interfere(mode: str, signals: Path):
    real = stages.write_dataset

    def write_dataset(result, out: Path):
        stats = real(result, out)
        if mode == "pause":
            with open(out / "train.jsonl", "a") as f:
                f.write('{"messages": [{"role": "user", "content": "half a li')
                f.flush()
            (signals / f"in-write-{os.getpid()}").write_text(str(out))
            time.sleep(600)  # the test kills us here
        elif mode == "barrier":
            (signals / f"in-write-{os.getpid()}").write_text(str(out))
            deadline = time.time() + 300
            while len(list(signals.glob("in-write-*"))) < 2:
                if time.time() > deadline:
                    raise TimeoutError("the other writer never arrived")
                time.sleep(0.02)
        return stats

    stages.write_dataset = write_dataset


def main() -> int:
    mode, signals = sys.argv[1], Path(sys.argv[2])
    if mode != "plain":
        interfere(mode, signals)
    from finetune_pipeline.defs import data, training
    from finetune_pipeline.defs.settings import PipelineSettings

    with dg.DagsterInstance.get() as instance:
        # base_model is materialized beforehand by the test; it is loaded, not rebuilt.
        result = dg.materialize(
            [data.raw_examples, data.training_dataset, training.base_model],
            selection=[data.raw_examples, data.training_dataset],
            instance=instance, resources={"settings": PipelineSettings()},
        )
    print(result.output_for_node("training_dataset").path)
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())

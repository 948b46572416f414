"""What the training child is told to do: a typed spec, written and read as JSON.

The run writes it (`spec.json` in the work dir, or inline on a pod's command
line) and `python -m finetune_pipeline.train_child SPEC` reads it back, so both
sides validate the same model and `train` is the run's TrainConfig, not a dict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from finetune_pipeline.lib.models.device import DtypeSetting
from finetune_pipeline.lib.training.config import TrainConfig


class DetachedRemote(BaseModel):
    """For a pod that shares no folder with the run (detached.py): the bucket, what to pull, where to upload."""

    model_config = ConfigDict(extra="forbid")

    url: str  # the artifacts' object-storage URL
    options: dict[str, Any] | None = None  # fsspec options (never credentials)
    mirror: str  # the run's mirror folder; the pod maps paths under it onto its own
    pull: list[tuple[str, str]] = []  # (asset, key) the pod pulls before training
    output: str  # bucket prefix the pod uploads its output folder to
    work: str  # bucket prefix of the checkpoints, so a retried pod resumes


class TrainSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_model_dir: str
    train_file: str
    val_file: str
    output_dir: str  # the adapter (or full model) is saved here, alone
    work_dir: str  # checkpoints and logs; survives the child so a retry can resume
    train: TrainConfig
    trust_remote_code: bool = False
    # model.dtype as configured; resolved in the child, where the device is (a pod may have the GPU the run lacks).
    model_dtype: DtypeSetting = "auto"
    general_file: str | None = None  # general-instruction JSONL, mixed in at train.general_mix_ratio
    remote: DetachedRemote | None = None  # set when the child runs where the run's folders are not

    @classmethod
    def load(cls, path_or_json: Path | str) -> TrainSpec:
        """From a spec file, or from the spec itself as JSON text (a pod's command line carries it inline)."""
        text = str(path_or_json)
        return cls.model_validate_json(text if text.lstrip().startswith("{") else Path(text).read_text())

    def dump(self) -> str:
        return self.model_dump_json()

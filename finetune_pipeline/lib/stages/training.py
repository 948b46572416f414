"""The training stage: the LoRA/QLoRA adapter (or full fine-tune), trained in a child process."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from finetune_pipeline.lib import PROJECT_ROOT
from finetune_pipeline.lib.config import PipelineConfig
from finetune_pipeline.lib.stages.common import artifact_key, build_artifact, store
from finetune_pipeline.lib.stages.models import base_model_dir
from finetune_pipeline.lib.storage.artifacts import ArtifactRef
from finetune_pipeline.lib.storage.hashing import hash_file
from finetune_pipeline.lib.training.config import TrainConfig
from finetune_pipeline.lib.training.detached import (
    collect_result,
    detach,
    forget_checkpoints,
)
from finetune_pipeline.lib.training.engine import child_command, require_bitsandbytes
from finetune_pipeline.lib.training.spec import TrainSpec

log = logging.getLogger(__name__)

# Runs the training child for a spec file and returns its result dict.
Launcher = Callable[[Path], dict[str, Any]]


def launch_subprocess(spec_path: Path) -> dict[str, Any]:
    """Run the training child without Dagster (tests, scripts): one process, or N under torchrun."""
    command = child_command(sys.executable, spec_path, TrainSpec.load(spec_path).train)
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"training child failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def training_work_dir(cfg: PipelineConfig, key: str) -> Path:
    """Checkpoints of the training for recipe `key`: outlives a killed child, so a retry resumes."""
    return store(cfg).root / "lora_adapter" / f".work-{key}"


def adapter_recipe(cfg: PipelineConfig, base: ArtifactRef, dataset: ArtifactRef
                   ) -> tuple[dict[str, Any], list[ArtifactRef | dict], Path | None]:
    """What the adapter for this config is made of: its recipe, its inputs, and the general-mix file if any.

    Known before training, so a caller (a sweep) can find an adapter by its key without training it.
    """
    train_cfg = cfg.section("train")
    inputs: list[ArtifactRef | dict] = [base, dataset]
    # Where the child runs (subprocess or a k8s pod) does not change what it trains; nor do the 4-bit
    # settings of a method that has no 4-bit base.
    unused = ("runner", "pod") + (() if cfg.train.effective_method == "qlora" else ("qlora",))
    trained = {k: v for k, v in train_cfg.items() if k not in unused}
    recipe = {"base": base.key, "dataset": dataset.key, "train": trained, "dtype": cfg.model.dtype}
    general_file = None
    if cfg.train.general_mix_ratio > 0:
        source = cfg.train.general_mix_source
        general_file = cfg.path(source)
        if not general_file.is_file() and source == TrainConfig.model_fields["general_mix_source"].default:
            # The default names the shipped file, which is not beside a config kept in configs/.
            general_file = PROJECT_ROOT / source
        if not general_file.is_file():
            raise FileNotFoundError(f"train.general_mix_source: {general_file} does not exist "
                                    f"(train.general_mix_ratio is {cfg.train.general_mix_ratio})")
        general = {"asset": "general instructions", "path": str(general_file), "sha256": hash_file(general_file)}
        inputs.append(general)
        recipe["general"] = general["sha256"]  # the file's content, not its name
    return recipe, inputs, general_file


def adapter_key(cfg: PipelineConfig, base: ArtifactRef, dataset: ArtifactRef) -> str:
    """The lora_adapter artifact key this config's train section gives: the same key lora_adapter builds under."""
    return artifact_key("lora_adapter", adapter_recipe(cfg, base, dataset)[0])


def lora_adapter(cfg: PipelineConfig, base: ArtifactRef, dataset: ArtifactRef, launch: Launcher = launch_subprocess,
                 run_id: str | None = None) -> ArtifactRef:
    """The adapter (or full fine-tune) trained on the dataset's train split, in a child process (or pod)."""
    train_cfg = cfg.section("train")
    require_bitsandbytes(cfg.train.effective_method)  # before anything is loaded or launched
    recipe, inputs, general_file = adapter_recipe(cfg, base, dataset)
    key = artifact_key("lora_adapter", recipe)
    artifacts = store(cfg)
    work = training_work_dir(cfg, key)
    detached = artifacts.remote is not None and cfg.train.runner == "k8s"
    spec = None

    def build(out: Path) -> dict:
        nonlocal spec
        work.mkdir(parents=True, exist_ok=True)
        if not detached:  # the child reads these folders; a detached pod pulls them itself
            dataset.ensure_local()
        spec = TrainSpec(
            base_model_dir=str(base_model_dir(base, pull=not detached)),
            train_file=str(Path(dataset.path) / "train.jsonl"),
            val_file=str(Path(dataset.path) / "val.jsonl"),
            output_dir=str(out),
            work_dir=str(work),
            train=cfg.train,
            trust_remote_code=cfg.model.base_model in cfg.model.trust_remote_code_allow,
            model_dtype=cfg.model.dtype,
            general_file=str(general_file) if general_file else None,
        )
        if detached:  # the pod shares no folder with this run: it pulls its inputs, uploads its output
            spec = detach(spec, artifacts.remote, key, [("base_model", base.key), ("training_dataset", dataset.key)])
        spec_path = work / "spec.json"
        spec_path.write_text(spec.dump())
        result = launch(spec_path)
        if detached:
            log.info("lora_adapter: %d file(s) back from the training pod",
                     len(collect_result(spec, artifacts.remote, out)))
        weights = "model.safetensors" if cfg.train.effective_method == "full" else "adapter_model.safetensors"
        if not any(out.glob(weights.replace(".safetensors", "*.safetensors"))):
            raise RuntimeError(f"training child exited without saving {weights}; checkpoints kept in {work}")
        return result

    ref = build_artifact(cfg, "lora_adapter", build, recipe=recipe, inputs=inputs, config=train_cfg,
                         unchanged="base model, dataset and training config unchanged (no training needed)",
                         run_id=run_id)
    if spec is not None:  # trained now: only a finished artifact retires the checkpoints
        shutil.rmtree(work, ignore_errors=True)
        if detached:
            forget_checkpoints(spec, artifacts.remote)
    return ref

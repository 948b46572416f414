"""LoRA, QLoRA and full fine-tuning with the Hugging Face Trainer, top to bottom.

Runs in a child process (see `finetune_pipeline.train_child`): GPU memory is
freed when it exits and a crash cannot take the orchestrator down. The same
entry point runs as one process or as N under `torchrun`/`accelerate launch`
(the Trainer reads RANK/WORLD_SIZE). It needs no Dagster: progress goes to the
standard `logging` module, and the child sends it wherever it reports to.

What the engine adds to a plain Trainer, in the order `train_model` runs:
1. an optional mix of general instruction examples (forgetting guard);
2. padding-free batches, checked exact on this model and backend, else
   length-grouped dynamic padding (see `packing.py`);
3. the LM head only on positions that carry loss (`logits_to_keep`);
4. eval every N steps, early stopping, the best checkpoint loaded at the end;
5. checkpoints every N steps in a work dir that outlives the process, and a
   resume from the last *complete* one (half-written ones are removed);
6. a log of which examples each rank trained on at each step.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from finetune_pipeline.lib.data.cleaning import read_split
from finetune_pipeline.lib.data.general_instructions import general_mix, read_general_examples
from finetune_pipeline.lib.models.base_models import load_model, load_tokenizer
from finetune_pipeline.lib.models.device import (
    choose_attn_implementation,
    cuda_available,
    describe_device,
    resolve_dtype,
    torch_dtype,
)
from finetune_pipeline.lib.training.collate import tokenize_chat, tokenize_records
from finetune_pipeline.lib.training.config import LoraConfig, QLoraConfig, TrainConfig
from finetune_pipeline.lib.training.packing import (
    EXAMPLE_ID,
    choose_batching,
    label_only_loss,
)
from finetune_pipeline.lib.training.spec import TrainSpec

log = logging.getLogger(__name__)
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
SEEN_LOG = "examples_seen.rank{rank}.jsonl"  # in the work dir, one line per micro-batch
ORDER_FILE = "examples_seen.jsonl"  # in the artifact: the final, de-duplicated training order


def require_bitsandbytes(method: str) -> None:
    """Fail before any model load when QLoRA's 4-bit kernels (bitsandbytes, CPU or CUDA) are not importable."""
    if method != "qlora":
        return
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise RuntimeError("train.method: qlora needs the bitsandbytes package (a dependency of finetune_pipeline: "
                           "pip install -e .), and it is not importable here")



def child_command(python: str, spec_path: Path | str, tc: TrainConfig) -> list[str]:
    """The command that runs the training child: one process, or N under torchrun / accelerate launch."""
    child = ["-m", "finetune_pipeline.train_child", str(spec_path)]
    n = tc.num_processes
    if n <= 1:
        return [python, *child]
    if tc.launcher == "accelerate":
        if tc.runner == "subprocess":
            import torch

            if not torch.cuda.is_available():
                raise RuntimeError("train.launcher: accelerate starts one process per GPU (--multi_gpu) and this "
                                   "machine has no CUDA device; use train.launcher: torchrun for several CPU processes")
        return [python, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(n),
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", *child[1:]]
    # --standalone: a private rendezvous on a free local port, so runs never collide.
    return [python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n), *child]


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


# --- checkpoints -------------------------------------------------------------

def _is_complete(ckpt: Path) -> bool:
    """The Trainer writes weights, optimizer, scheduler and RNG state, then trainer_state.json last."""
    try:
        state = json.loads((ckpt / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    weights = any((ckpt / f).is_file() for f in ("adapter_model.safetensors", "model.safetensors",
                                                 "model.safetensors.index.json"))
    step = int(CHECKPOINT.match(ckpt.name).group(1))
    return (weights and (ckpt / "optimizer.pt").is_file() and (ckpt / "scheduler.pt").is_file()
            and state.get("global_step") == step)


def _checkpoints(work_dir: Path) -> list[tuple[int, Path]]:
    return sorted((int(m.group(1)), p) for p in Path(work_dir).glob("checkpoint-*")
                  if p.is_dir() and (m := CHECKPOINT.match(p.name)))


def last_complete_checkpoint(work_dir: Path) -> Path | None:
    """The newest complete checkpoint-N in `work_dir` (read only: a trainer may be writing there)."""
    return next((path for _, path in reversed(_checkpoints(work_dir)) if _is_complete(path)), None)


def remove_incomplete_checkpoints(work_dir: Path) -> None:
    """Before a resume: checkpoints a killed attempt left half-written are removed, and said."""
    for _, path in _checkpoints(work_dir):
        if not _is_complete(path):
            log.warning("ignoring half-written %s (no complete trainer state); removing it", path.name)
            if rank() == 0:
                shutil.rmtree(path, ignore_errors=True)


# --- data --------------------------------------------------------------------

def _rows(tokenizer, records: list[dict[str, Any]], start_id: int = 0) -> list[dict[str, Any]]:
    return [{**tokenize_chat(tokenizer, r["messages"]), EXAMPLE_ID: start_id + i} for i, r in enumerate(records)]


# --- the training run --------------------------------------------------------

class Precision:
    """Where and in what dtypes a run trains, decided once from the spec and this machine."""

    def __init__(self, spec: TrainSpec, method: str, on_cuda: bool):
        tc = spec.train
        self.on_cuda = on_cuda
        self.dtype = resolve_dtype(spec.model_dtype, on_cuda)  # the training dtype, saved with a full model
        padding_free = tc.packing is True or (tc.packing == "auto" and on_cuda)
        self.attn_implementation = choose_attn_implementation(tc.attn_implementation, on_cuda, padding_free,
                                                              self.dtype)
        self.quantization = tc.qlora.model_dump() if method == "qlora" else None

    def load_kwargs(self, method: str, qlora: QLoraConfig, local_rank: int) -> dict[str, Any]:
        """What `from_pretrained` gets besides the path."""
        kwargs: dict[str, Any] = {"attn_implementation": self.attn_implementation}
        if method == "full":
            # fp32 master weights under bf16 autocast: Adam's small updates vanish in bf16 weights.
            kwargs["dtype"] = torch_dtype("float32")
        elif method == "qlora":
            # The weights left unquantised (embeddings, norms) load in the compute dtype: a converted copy
            # frees the checkpoint's mapping, where fp32 views into it kept it resident (SmolLM2 on CPU:
            # 494 MB held after the load instead of 177). prepare_model_for_kbit_training casts them to fp32.
            kwargs["dtype"] = torch_dtype(qlora.compute_dtype)
        else:  # the frozen base in the training dtype: bf16 halves its memory on a GPU
            kwargs["dtype"] = torch_dtype(self.dtype)
        if method == "qlora":
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type=qlora.quant_type,
                bnb_4bit_use_double_quant=qlora.double_quant,
                bnb_4bit_compute_dtype=torch_dtype(qlora.compute_dtype))
            # Quantised weights cannot be moved after loading: place them where this rank trains.
            kwargs["device_map"] = {"": local_rank} if self.on_cuda else "cpu"
        return kwargs

    def training_args(self, method: str, qlora: QLoraConfig) -> dict[str, Any]:
        """The TrainingArguments that follow from the device and dtype."""
        return {"use_cpu": not self.on_cuda, "bf16": self.dtype == "bfloat16",
                "optim": qlora.optim if method == "qlora" else "adamw_torch"}


def _load_for_training(spec: TrainSpec, method: str, precision: Precision):
    kwargs = precision.load_kwargs(method, spec.train.qlora, int(os.environ.get("LOCAL_RANK", "0")))
    model = load_model(Path(spec.base_model_dir), trust_remote_code=spec.trust_remote_code, **kwargs)
    if method == "qlora":
        from peft import prepare_model_for_kbit_training

        # Freezes the 4-bit base and casts the remaining (norm, embedding) weights to fp32 for stable training.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=spec.train.gradient_checkpointing)
    return model


def _with_adapter(model, method: str, lora: LoraConfig):
    if method == "full":
        return model
    import peft

    return peft.get_peft_model(model, peft.LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
        target_modules=lora.target_modules, task_type="CAUSAL_LM",
    ))


def train_model(spec: TrainSpec, callbacks: list | None = None) -> dict[str, Any]:
    """Train as `spec` says; `callbacks` are extra TrainerCallbacks (the benchmark's meter)."""
    tc = spec.train
    method = tc.effective_method
    require_bitsandbytes(method)

    from datasets import Dataset
    from transformers import EarlyStoppingCallback, TrainingArguments, set_seed
    from transformers.trainer_callback import PrinterCallback

    from finetune_pipeline.lib.training.trainer import (
        CheckpointReport,
        EngineTrainer,
        ProgressCallback,
    )

    work_dir = Path(spec.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    set_seed(tc.seed)
    tokenizer = load_tokenizer(Path(spec.base_model_dir))
    task_records = read_split(Path(spec.train_file))
    if not task_records:
        raise ValueError(f"{spec.train_file}: no training examples")
    train_rows = _rows(tokenizer, task_records)
    general = []
    if tc.general_mix_ratio > 0:
        if not spec.general_file:
            raise ValueError("train.general_mix_ratio > 0 but no general-instruction file was given")
        general = general_mix(read_general_examples(Path(spec.general_file)), len(task_records),
                              tc.general_mix_ratio, tc.seed)
        train_rows += _rows(tokenizer, general, start_id=len(train_rows))
    val_rows = tokenize_records(tokenizer, read_split(Path(spec.val_file)))

    precision = Precision(spec, method, cuda_available())
    log.info(f"training on {'cuda' if precision.on_cuda else 'cpu'} in {precision.dtype}, attention "
             f"'{precision.attn_implementation}' (train.attn_implementation: {tc.attn_implementation})"
             + (f", 4-bit base {precision.quantization}" if precision.quantization else ""))
    model = _load_for_training(spec, method, precision)
    # A KV cache is useless in training, and with one the masking utils would
    # not build the per-example (block-diagonal) mask of a packed row.
    model.config.use_cache = False
    model = _with_adapter(model, method, tc.lora)
    trainable, total = model.get_nb_trainable_parameters() if method != "full" else (
        sum(p.numel() for p in model.parameters() if p.requires_grad), sum(p.numel() for p in model.parameters()))
    label = {"lora": f"LoRA r={tc.lora.r}", "qlora": f"QLoRA ({tc.qlora.quant_type}) r={tc.lora.r}",
             "full": "full"}[method]
    log.info(f"{label}: {trainable:,} trainable of {total:,} parameters; {len(task_records)} train"
           f"{f' + {len(general)} general' if general else ''} / {len(val_rows)} val examples")

    packing, collator = choose_batching(model, tokenizer, train_rows, tc.packing)

    has_val = bool(val_rows)
    patience = tc.early_stopping_patience
    on_gpu = precision.on_cuda
    world = int(os.environ.get("WORLD_SIZE", "1"))
    args = TrainingArguments(
        output_dir=str(work_dir),
        num_train_epochs=tc.epochs,
        max_steps=tc.max_steps,
        per_device_train_batch_size=tc.batch_size,
        per_device_eval_batch_size=tc.batch_size,
        gradient_accumulation_steps=tc.gradient_accumulation_steps,
        learning_rate=tc.learning_rate,
        warmup_steps=float(tc.warmup_ratio),  # a float in [0, 1) is a ratio of total steps
        lr_scheduler_type="cosine",
        logging_steps=tc.logging_steps,
        eval_strategy="steps" if has_val else "no",
        eval_steps=tc.eval_steps,
        prediction_loss_only=True,
        save_strategy="steps",
        save_steps=tc.save_steps or tc.eval_steps,
        save_total_limit=tc.save_total_limit,
        load_best_model_at_end=has_val,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        # Early stopping's patience counter is resumed with the checkpoint.
        restore_callback_states_from_checkpoint=True,
        torch_compile=tc.torch_compile,
        report_to=[],
        seed=tc.seed,
        data_seed=tc.seed,
        **precision.training_args(method, tc.qlora),
        ddp_backend=None if on_gpu or world == 1 else "gloo",
        ddp_find_unused_parameters=False if world > 1 else None,
        # Padded batches waste least when their rows have similar lengths;
        # padding-free batches have nothing to waste, so they stay random.
        train_sampling_strategy="group_by_length" if packing == "grouped_padding" else "random",
        # A padding-free row has no padding to leave out (and no attention mask to find it by).
        include_num_input_tokens_seen="all" if packing == "padding_free" else "non_padding",
        dataloader_num_workers=0,
        disable_tqdm=True,
        remove_unused_columns=False,
        **_checkpointing_args(tc.gradient_checkpointing),
    )
    remove_incomplete_checkpoints(work_dir)
    resume = last_complete_checkpoint(work_dir)
    resumed_from = int(CHECKPOINT.match(resume.name).group(1)) if resume else 0
    if resume:
        log.info(f"resuming from {resume.name} (step {resumed_from}) in {work_dir}")

    progress = ProgressCallback()
    callbacks = [progress, CheckpointReport(), *(callbacks or [])]
    if has_val and patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=patience))
    trainer = EngineTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(val_rows) if has_val else None,
        data_collator=collator, compute_loss_func=label_only_loss, callbacks=callbacks,
    )
    trainer.seen_log = work_dir / SEEN_LOG.format(rank=trainer.args.process_index)
    trainer.start_step = resumed_from
    # Progress goes through the log (the Dagster run log); don't also print raw log dicts.
    trainer.remove_callback(PrinterCallback)
    started = time.time()
    out = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.time() - started

    state = trainer.state
    if has_val and state.best_metric is not None:
        eval_loss = state.best_metric  # the checkpoint loaded at the end
    else:
        eval_loss = trainer.evaluate()["eval_loss"] if has_val else None
    tokens_this_attempt = int(state.num_input_tokens_seen) - progress.tokens_at_start
    stopped_early = state.global_step < state.max_steps

    if trainer.is_world_process_zero():
        _save(trainer.model, method, spec, tokenizer, precision.dtype)
        _write_order(work_dir, Path(spec.output_dir), trainer.args.world_size)
    curve = _curve(state.log_history)
    result = {
        "method": method,
        "packing": packing,
        "train_loss": round(float(out.training_loss), 4),
        "final_loss": next((p["loss"] for p in reversed(curve) if "loss" in p), None),
        "eval_loss": round(float(eval_loss), 4) if eval_loss is not None else None,
        "best_step": _step_of(state.best_model_checkpoint),
        "stopped_early": stopped_early,
        "steps": int(state.global_step),
        "max_steps": int(state.max_steps),
        "resumed_from_step": resumed_from,
        "epochs": round(float(state.epoch or 0), 3),
        "train_examples": len(task_records),
        "general_examples": len(general),
        "num_processes": trainer.args.world_size,
        "tokens_seen": int(state.num_input_tokens_seen),
        "train_seconds": round(seconds, 1),
        # Non-pad tokens per second of this attempt, all ranks together.
        "tokens_per_second": round(tokens_this_attempt / seconds, 1) if seconds else None,
        "padding_fraction": trainer.padding_fraction(),
        "loss_curve": curve,
        "trainable_parameters": trainable,
        # The cost code prices training from `device`; the merge saves weights in `dtype`.
        "device": describe_device(trainer.args.world_size).model_dump(),
        "dtype": precision.dtype,
        "quantization": precision.quantization,
        "attn_implementation": getattr(_inner(trainer.model).config, "_attn_implementation", None),
    }
    log.info(f"done: {result['steps']}/{result['max_steps']} steps in {seconds:.0f}s"
           f"{' (stopped early)' if stopped_early else ''}, train loss {result['train_loss']}, "
           f"eval loss {result['eval_loss']} (best step {result['best_step']}), "
           f"{result['tokens_per_second']} non-pad tokens/s, padding {result['padding_fraction']:.1%}")
    return result


def _checkpointing_args(on: bool) -> dict[str, Any]:
    """Activation (gradient) checkpointing: recompute activations in backward to save memory."""
    if not on:
        return {}
    from transformers import TrainingArguments

    # transformers 5 renamed gradient_checkpointing to activation_checkpointing.
    name = ("activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
            else "gradient_checkpointing")
    return {name: True, f"{name}_kwargs": {"use_reentrant": False}}


def _inner(model):
    """The transformers model under a PEFT wrapper."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _save(model, method: str, spec: TrainSpec, tokenizer, dtype: str) -> None:
    if method == "full":
        model.config.use_cache = True  # for whoever generates with it
        # Trained with fp32 master weights; saved (and served) in the training dtype.
        model.to(torch_dtype(dtype)).save_pretrained(spec.output_dir, safe_serialization=True)
        tokenizer.save_pretrained(spec.output_dir)
    else:
        # The adapter alone: adapter_config.json + adapter_model.safetensors.
        model.save_pretrained(spec.output_dir, safe_serialization=True)


def _write_order(work_dir: Path, output_dir: Path, world_size: int) -> None:
    """Per rank and step, the example ids trained on; a step redone after a resume keeps its last record."""
    order: dict[tuple[int, int], list[int]] = {}
    for r in range(world_size):
        path = work_dir / SEEN_LOG.format(rank=r)
        if path.is_file():
            for line in path.read_text().splitlines():
                rec = json.loads(line)
                if rec["micro"] == 0:
                    order[(r, rec["step"])] = []
                order.setdefault((r, rec["step"]), []).extend(rec["ids"])
    with open(output_dir / ORDER_FILE, "w") as f:
        for (r, step), ids in sorted(order.items()):
            f.write(json.dumps({"rank": r, "step": step, "ids": ids}) + "\n")


def _curve(log_history: list[dict[str, Any]]) -> list[dict[str, float]]:
    curve = []
    for h in log_history:
        for key in ("loss", "eval_loss"):
            if key in h:
                curve.append({"step": h["step"], key: round(float(h[key]), 4)})
    return curve


def _step_of(checkpoint: str | None) -> int | None:
    m = CHECKPOINT.match(Path(checkpoint).name) if checkpoint else None
    return int(m.group(1)) if m else None

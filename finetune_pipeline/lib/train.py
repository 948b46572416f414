"""LoRA / QLoRA training with the Hugging Face Trainer, top to bottom.

Runs in a child process (see `finetune_pipeline.train_child`): GPU memory is
freed when it exits and a crash cannot take the orchestrator down. It needs
no Dagster: `report` is any callable that takes a line of progress.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from finetune_pipeline.lib.base_models import load_model, load_tokenizer
from finetune_pipeline.lib.cleaning import read_split
from finetune_pipeline.lib.collate import make_collator, tokenize_records

Report = Callable[[str], None]


@dataclass
class TrainSpec:
    base_model_dir: str
    train_file: str
    val_file: str
    output_dir: str  # the adapter is saved here, alone
    work_dir: str  # trainer scratch (checkpoints), outside the artifact
    train: dict[str, Any]  # TrainConfig as a dict
    trust_remote_code: bool = False

    @classmethod
    def load(cls, path: Path) -> "TrainSpec":
        return cls(**json.loads(Path(path).read_text()))


def require_cuda_for(quantization: str) -> None:
    """Fail before any model load: 4-bit bitsandbytes kernels need CUDA."""
    if quantization == "none":
        return
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError(
            f"train.quantization={quantization!r} (QLoRA) needs a CUDA GPU and the bitsandbytes package "
            "(pip install 'finetune_pipeline[gpu]'); this machine has no CUDA device. "
            "Use train.quantization: none to train LoRA on this machine."
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise RuntimeError("QLoRA needs bitsandbytes: pip install 'finetune_pipeline[gpu]'") from e


def _load_for_training(spec: TrainSpec, tc: dict[str, Any]):
    import torch

    if tc["quantization"] == "nf4":
        from peft import prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig

        bnb = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16,
        )
        model = load_model(Path(spec.base_model_dir), trust_remote_code=spec.trust_remote_code,
                           quantization_config=bnb, dtype=torch.bfloat16)
        return prepare_model_for_kbit_training(model)
    return load_model(Path(spec.base_model_dir), trust_remote_code=spec.trust_remote_code)


def train_lora(spec: TrainSpec, report: Report = print) -> dict[str, Any]:
    tc = spec.train
    require_cuda_for(tc["quantization"])

    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments, set_seed
    from transformers.trainer_callback import PrinterCallback

    set_seed(tc["seed"])
    tokenizer = load_tokenizer(Path(spec.base_model_dir))
    train_rows = tokenize_records(tokenizer, read_split(Path(spec.train_file)))
    val_rows = tokenize_records(tokenizer, read_split(Path(spec.val_file)))
    if not train_rows:
        raise ValueError(f"{spec.train_file}: no training examples")
    train_ds = Dataset.from_list(train_rows)
    val_ds = Dataset.from_list(val_rows) if val_rows else None

    model = _load_for_training(spec, tc)
    lora = tc["lora"]
    model = get_peft_model(model, LoraConfig(
        r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
        target_modules=lora["target_modules"], task_type="CAUSAL_LM",
    ))
    trainable, total = model.get_nb_trainable_parameters()
    report(f"LoRA r={lora['r']}: {trainable:,} trainable of {total:,} parameters; "
           f"{len(train_rows)} train / {len(val_rows)} val examples")

    use_cpu = not torch.cuda.is_available()
    args = TrainingArguments(
        output_dir=spec.work_dir,
        num_train_epochs=tc["epochs"],
        max_steps=tc["max_steps"],
        per_device_train_batch_size=tc["batch_size"],
        per_device_eval_batch_size=tc["batch_size"],
        gradient_accumulation_steps=tc["gradient_accumulation_steps"],
        learning_rate=tc["learning_rate"],
        warmup_steps=float(tc["warmup_ratio"]),  # a float in [0, 1) is a ratio of total steps
        lr_scheduler_type="cosine",
        logging_steps=tc["logging_steps"],
        eval_strategy="steps" if val_ds is not None else "no",
        eval_steps=tc["eval_steps"],
        save_strategy="no",
        report_to=[],
        seed=tc["seed"],
        data_seed=tc["seed"],
        use_cpu=use_cpu,
        bf16=not use_cpu and torch.cuda.is_bf16_supported(),
        # Batches of similar length waste little on padding.
        train_sampling_strategy="group_by_length",
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        disable_tqdm=True,
        remove_unused_columns=False,
    )
    progress = ProgressCallback(report)
    trainer = Trainer(
        model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds,
        data_collator=make_collator(tokenizer), callbacks=[progress],
    )
    # Progress goes through `report` (the Dagster log); don't also print raw log dicts.
    trainer.remove_callback(PrinterCallback)
    started = time.time()
    out = trainer.train()
    seconds = time.time() - started
    # The last periodic eval may already be at the final step; don't pay twice.
    last_eval = [p for p in progress.curve if "eval_loss" in p]
    if last_eval and last_eval[-1]["step"] == trainer.state.global_step:
        eval_loss = last_eval[-1]["eval_loss"]
    else:
        eval_loss = trainer.evaluate()["eval_loss"] if val_ds is not None else None

    # The adapter alone: adapter_config.json + adapter_model.safetensors.
    model.save_pretrained(spec.output_dir, safe_serialization=True)
    tokens = int(trainer.state.num_input_tokens_seen)
    result = {
        "train_loss": round(float(out.training_loss), 4),
        "final_loss": round(progress.last_loss, 4) if progress.last_loss is not None else None,
        "eval_loss": round(float(eval_loss), 4) if eval_loss is not None else None,
        "steps": int(trainer.state.global_step),
        "epochs": round(float(trainer.state.epoch or 0), 3),
        "train_examples": len(train_rows),
        "tokens_seen": tokens,
        "train_seconds": round(seconds, 1),
        "tokens_per_second": round(tokens / seconds, 1) if seconds else None,
        "loss_curve": progress.curve,
        "trainable_parameters": trainable,
    }
    report(f"done: {result['steps']} steps in {seconds:.0f}s, train loss {result['train_loss']}, "
           f"eval loss {result['eval_loss']}, {result['tokens_per_second']} tokens/s")
    return result


def _trainer_callback_base():
    from transformers import TrainerCallback

    return TrainerCallback


class ProgressCallback(_trainer_callback_base()):
    """Step i/N, loss, non-pad tokens/s and ETA, at every log and at least every 30 s."""

    def __init__(self, report: Report, every_seconds: float = 30.0):
        self.report = report
        self.every = every_seconds
        self.curve: list[dict[str, float]] = []
        self.last_loss: float | None = None
        self._start = self._last = time.time()

    def on_train_begin(self, args, state, control, **kwargs):
        self._start = self._last = time.time()

    def _line(self, state, extra: str = "") -> str:
        elapsed = time.time() - self._start
        done = max(state.global_step, 1)
        eta = elapsed / done * max(state.max_steps - state.global_step, 0)
        tps = state.num_input_tokens_seen / elapsed if elapsed > 0 else 0.0
        loss = f"loss {self.last_loss:.4f}" if self.last_loss is not None else "loss -"
        return (f"step {state.global_step}/{state.max_steps} {loss}{extra} "
                f"{tps:,.0f} tokens/s ETA {_mmss(eta)}")

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        extra = ""
        if "loss" in logs:
            self.last_loss = float(logs["loss"])
            self.curve.append({"step": state.global_step, "loss": self.last_loss})
        if "eval_loss" in logs:
            extra = f" eval_loss {logs['eval_loss']:.4f}"
            self.curve.append({"step": state.global_step, "eval_loss": float(logs["eval_loss"])})
        if "loss" in logs or extra:
            self._last = time.time()
            self.report(self._line(state, extra))

    def on_step_end(self, args, state, control, **kwargs):
        if time.time() - self._last >= self.every:
            self._last = time.time()
            self.report(self._line(state))


def _mmss(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    return f"{m}:{s:02d}"

"""Training throughput: the seed recipe vs our engine vs TRL's SFTTrainer, same model, same data.

    python benchmarks/training.py            # SmolLM2-135M-Instruct, the sample data (~10 min on 2 cores)
    python benchmarks/training.py --quick    # the tiny random model (< 1 min)
    python benchmarks/training.py --memory   # LoRA vs QLoRA peak RSS on SmolLM2 (~3 min on 2 cores)

Variants (LoRA r=16 on all linear layers, batch 8, lr 1e-3, fp32, one process each):
- seed: the seed recipe exactly: chat template text padded to max_length=2048
  (`padding="max_length"`), labels = a copy of input_ids (loss on prompt and
  padding too), the plain HF Trainer. One 2048-position row per step: 8 of
  them at once would need ~20 GB, and a row costs the same per position
  either way (the LoRA optimizer step, 4.9M parameters, is negligible).
- ours: `finetune_pipeline.lib.training.engine.train_model` with padding-free batches
  (`train.packing: true`, the engine's padding-free mode and its default on a GPU).
- ours_padded (in the default run): the same engine with length-grouped dynamic
  padding, which `train.packing: auto` (the default) picks on CPU because it
  measures faster there; it pads a few percent of positions.
- trl: TRL SFTTrainer, padding_free=True, on the same tokenized examples and
  assistant-only labels; gradient checkpointing off and fp32 like the others
  (TRL's defaults turn both on; both measured slower on this CPU).
- trl_packed (in the default run): TRL's BFD packing into rows of ~8 examples.

--memory: LoRA (fp32 base) vs QLoRA (nf4 base, double quantisation, bf16
compute, paged AdamW) with the same engine, grouped padding, a few steps each,
each in its own process: peak RSS of that process and the bytes the model's
weights and buffers hold when training starts, with their ratios.

Each variant runs in its own process (so peak RSS is its own), time-boxed.
Throughput is steady state: non-pad tokens / seconds over the optimizer steps
after the first (which pays one-off costs). On a shared machine wall-clock
seconds measure the scheduler as much as the code, so the table also gives
non-pad tokens per CPU-second of the variant's process (`*_cpu` ratios). Ours and TRL run in alternating
rounds so that both see the same drift in machine load; a round's figures are
summed. The last line is one JSON object with the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LORA = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}
SEED_MAX_LENGTH = 2048


# --- measuring ----------------------------------------------------------------

def rss_mb(field: str = "VmRSS") -> float | None:
    """This process's resident memory now (VmRSS) or at its peak since the last reset (VmHWM), in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Start VmHWM again from the current RSS (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def meter_callback(time_box: float, min_steps: int):
    """Times optimizer steps and their non-pad tokens; stops the run at the time box."""
    from transformers import TrainerCallback

    class Meter(TrainerCallback):
        def __init__(self):
            self.steps: list[tuple[float, float, int]] = []  # (seconds, CPU seconds, non-pad tokens) per step
            self.positions = self.tokens = 0  # over every collated batch, for the padding fraction

        def wrap(self, trainer) -> None:
            """Count padded positions in what the collator hands the model."""
            inner = trainer.data_collator

            def counting(features):
                batch = inner(features)
                mask = batch.get("attention_mask")
                self.positions += batch["input_ids"].numel()
                self.tokens += int(mask.sum()) if mask is not None else batch["input_ids"].numel()
                return batch
            trainer.data_collator = counting

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            # What the model holds (4-bit weights count as their packed bytes).
            tensors = [*model.parameters(), *model.buffers()] if model is not None else []
            self.model_bytes = sum(t.numel() * t.element_size() for t in tensors)
            # Loading a 4-bit base reads the whole fp32 checkpoint (file-backed pages, counted in RSS while
            # mapped) before quantising it: a transient of the load, not what training holds. So the peak
            # of the training steps alone is measured too, and what the model holds once every weight has
            # been read (an fp32 base is mapped lazily: right after the load most of it is not resident yet).
            self.peak_reset = reset_peak_rss()
            self.start = time.time()
            self._seen = state.num_input_tokens_seen

        def on_step_begin(self, args, state, control, **kwargs):
            self._t, self._cpu = time.time(), time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            # num_input_tokens_seen counts non-pad tokens (attention mask, or every token of a padding-free row).
            if not self.steps:  # every weight has been read once: what the loaded model holds now
                self.rss_after_first_step = rss_mb()
            self.steps.append((time.time() - self._t, time.process_time() - self._cpu,
                               state.num_input_tokens_seen - self._seen))
            self._seen = state.num_input_tokens_seen
            if time.time() - self.start > time_box and len(self.steps) >= min_steps:
                control.should_training_stop = True

        def summary(self, log_history) -> dict:
            steady = self.steps[1:]  # every step but the first
            tokens, seconds, cpu = sum(s[2] for s in steady), sum(s[0] for s in steady), sum(s[1] for s in steady)
            losses = [h["loss"] for h in log_history if "loss" in h]
            return {
                "steps": len(self.steps),
                "tokens": tokens,
                "seconds": round(seconds, 2),
                "tokens_per_second": round(tokens / seconds, 2) if seconds else None,
                "cpu_seconds": round(cpu, 2),
                "tokens_per_cpu_second": round(tokens / cpu, 2) if cpu else None,
                "padding_fraction": round(1 - self.tokens / self.positions, 4) if self.positions else None,
                "final_loss": round(losses[-1], 4) if losses else None,
                "model_mb": round(getattr(self, "model_bytes", 0) / 2**20, 1),
                "rss_after_first_step_mb": getattr(self, "rss_after_first_step", None),
                "train_peak_rss_mb": rss_mb("VmHWM") if getattr(self, "peak_reset", False) else None,
            }

    return Meter()


# --- the variants (each runs in its own process) ------------------------------

def _records(train_file: str):
    from finetune_pipeline.lib.data.cleaning import read_split

    return read_split(Path(train_file))


def _lora_model(model_dir: str):
    from peft import LoraConfig, get_peft_model

    from finetune_pipeline.lib.models.base_models import load_model

    model = load_model(Path(model_dir))
    return get_peft_model(model, LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                                            target_modules=LORA["target_modules"], task_type="CAUSAL_LM"))


def _common_args(batch: int, steps: int, out_dir: str) -> dict:
    return dict(output_dir=out_dir, max_steps=steps, learning_rate=1e-3, warmup_steps=0.05,
                lr_scheduler_type="cosine", logging_steps=1, save_strategy="no", report_to=[], seed=42,
                use_cpu=True, dataloader_num_workers=0, disable_tqdm=True)


def run_seed(a, meter) -> dict:
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments, default_data_collator

    from finetune_pipeline.lib.models.base_models import load_tokenizer

    tok = load_tokenizer(Path(a.model_dir))
    texts = [tok.apply_chat_template(r["messages"], tokenize=False) for r in _records(a.train_file)]
    enc = tok(texts, padding="max_length", max_length=SEED_MAX_LENGTH, truncation=True)
    ds = Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                            "labels": [list(ids) for ids in enc["input_ids"]]})  # labels = input_ids copy
    args = TrainingArguments(**_common_args(a.batch, a.steps, a.work), include_num_input_tokens_seen="non_padding",
                             per_device_train_batch_size=1)
    trainer = Trainer(model=_lora_model(a.model_dir), args=args, train_dataset=ds,
                      data_collator=default_data_collator, callbacks=[meter])
    meter.wrap(trainer)
    trainer.train()
    return meter.summary(trainer.state.log_history)


def run_ours(a, meter) -> dict:
    from finetune_pipeline.lib.training.config import LoraConfig, TrainConfig
    from finetune_pipeline.lib.training.engine import train_model
    from finetune_pipeline.lib.training.spec import TrainSpec

    tc = TrainConfig(lora=LoraConfig(**LORA), batch_size=a.batch, max_steps=a.steps, learning_rate=1e-3,
                     logging_steps=1, eval_steps=10_000, save_steps=10_000, **a.ours_options)
    empty_val = Path(a.work) / "val.jsonl"
    empty_val.write_text("")  # no evaluation: this measures training
    spec = TrainSpec(base_model_dir=a.model_dir, train_file=a.train_file, val_file=str(empty_val),
                     output_dir=str(Path(a.work) / "adapter"), work_dir=str(Path(a.work) / "work"), train=tc)
    result = train_model(spec, callbacks=[meter])
    # The engine counts padded positions itself (its collator is internal).
    return {**meter.summary(_log_history(result)), "padding_fraction": result["padding_fraction"],
            "packing": result["packing"]}


def _log_history(result: dict) -> list[dict]:
    return [p for p in result["loss_curve"] if "loss" in p]


def run_trl(a, meter, packed: bool = False) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from finetune_pipeline.lib.models.base_models import load_model, load_tokenizer
    from finetune_pipeline.lib.training.collate import tokenize_records

    tok = load_tokenizer(Path(a.model_dir))
    rows = tokenize_records(tok, _records(a.train_file))  # the same ids and assistant-only labels as ours
    ds = Dataset.from_list([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows])
    mean_len = statistics.mean(len(r["input_ids"]) for r in rows)
    common = _common_args(a.batch, a.steps, a.work)
    options = dict(padding_free=True, max_length=None, per_device_train_batch_size=a.batch)
    if packed:  # rows of about `batch` examples, one row per step: the same tokens per step
        options = dict(packing=True, packing_strategy="bfd", max_length=int(mean_len * a.batch),
                       per_device_train_batch_size=1)
    args = SFTConfig(**common, **options, gradient_checkpointing=False, bf16=False,
                     include_num_input_tokens_seen="all")
    model = load_model(Path(a.model_dir))
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=[meter],
                         peft_config=LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                                                target_modules=LORA["target_modules"], task_type="CAUSAL_LM"))
    meter.wrap(trainer)
    trainer.train()
    return meter.summary(trainer.state.log_history)


VARIANTS = {
    "seed": run_seed,
    "ours": run_ours,
    "ours_gc": run_ours,  # with gradient checkpointing
    "ours_compile": run_ours,  # with torch.compile
    "ours_padded": run_ours,  # length-grouped dynamic padding (what packing: auto picks on CPU)
    "ours_qlora": run_ours,  # the same on a 4-bit nf4 base (bitsandbytes, CPU or CUDA)
    "trl": run_trl,
    "trl_packed": lambda a, m: run_trl(a, m, packed=True),
}
OURS_OPTIONS = {"ours_gc": {"gradient_checkpointing": True}, "ours_compile": {"torch_compile": True},
                "ours_padded": {"packing": False}, "ours_qlora": {"packing": False, "method": "qlora"}}


def child(a) -> None:
    import torch

    torch.manual_seed(0)
    # "ours" is the padding-free engine whatever the machine (auto would pick grouped padding on CPU).
    a.ours_options = OURS_OPTIONS.get(a.run_variant, {"packing": True} if a.run_variant == "ours" else {})
    load_before = os.getloadavg()[0]
    if a.run_variant == "ours_padded" or a.run_variant == "ours_qlora":
        # Both sides of the memory comparison import the same libraries (peft imports bitsandbytes when it
        # is installed anyway), so the difference in RSS is the model's, not bitsandbytes' code.
        import bitsandbytes  # noqa: F401
        import peft  # noqa: F401
        import transformers  # noqa: F401
    result = VARIANTS[a.run_variant](a, meter_callback(a.time_box, a.min_steps))
    result.update(variant=a.run_variant, peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                  load=[round(load_before, 1), round(os.getloadavg()[0], 1)])
    print("RESULT " + json.dumps(result), flush=True)


# --- the parent: data, rounds, table --------------------------------------------

def prepare_data(quick: bool, root: Path) -> tuple[str, str]:
    from finetune_pipeline.lib import stages
    from finetune_pipeline.lib.config import DEFAULT_CONFIG, load_config

    model = "tiny-random" if quick else "embedded:smollm2-135m-instruct"
    # The project's model cache, a scratch artifacts root: the benchmark registers no model version.
    cfg = load_config(DEFAULT_CONFIG, {"model": {"base_model": model}, "artifacts_root": str(root / "artifacts")})
    base = stages.base_model(cfg)
    dataset = stages.training_dataset(cfg, stages.raw_examples(cfg), base)
    return base.info["model_dir"], str(dataset.dir / "train.jsonl")


def run_variant(name: str, a, model_dir: str, train_file: str, steps: int, time_box: float, root: Path) -> dict:
    work = tempfile.mkdtemp(prefix=f"{name}-", dir=root)
    cmd = [sys.executable, __file__, "--run-variant", name, "--model-dir", model_dir, "--train-file", train_file,
           "--steps", str(steps), "--time-box", str(time_box), "--min-steps", str(a.min_steps),
           "--batch", str(a.batch), "--work", work]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    if a.memory:
        # A fixed mmap threshold: every large tensor is its own mapping, returned to the system when freed.
        # glibc's default raises the threshold as large blocks are freed and keeps them in its heap, so peak
        # RSS varied by 30% between identical runs (1281 vs 1521 MB); with it, RSS follows live memory.
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"variant {name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1].removeprefix("RESULT "))
    print(f"  {name:12s} {result['steps']} steps, {result['tokens_per_second']} tokens/s "
          f"(load {result['load'][0]}..{result['load'][1]})", flush=True)
    return result


def combine(results: list[dict]) -> dict:
    """Rounds of one variant: tokens and seconds summed, the rest from the last round."""
    out = dict(results[-1])
    out["tokens"] = sum(r["tokens"] for r in results)
    out["seconds"] = round(sum(r["seconds"] for r in results), 2)
    out["tokens_per_second"] = round(out["tokens"] / out["seconds"], 2) if out["seconds"] else None
    out["cpu_seconds"] = round(sum(r["cpu_seconds"] for r in results), 2)
    out["tokens_per_cpu_second"] = round(out["tokens"] / out["cpu_seconds"], 2) if out["cpu_seconds"] else None
    out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in results)
    out["steps"] = sum(r["steps"] for r in results)
    out["rounds"] = len(results)
    return out


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip() if Path("/proc/loadavg").is_file() else str(os.getloadavg())


def memory_comparison(a) -> int:
    """LoRA vs QLoRA on SmolLM2 (or the tiny model with --quick): peak RSS and model bytes, each in its own process.

    At batch 1 and at --batch: with one example per step the weights are a large part of the peak; at
    batch 8 the activations and the 49k-vocabulary logits are, so the two show different things.
    """
    steps, time_box = (3, 10) if a.quick else (3, 120)
    batches = sorted({1, a.batch})
    print(f"machine: {os.cpu_count()} CPUs, /proc/loadavg: {loadavg()}")
    runs: list[tuple[int, str, dict]] = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        root = Path(tmp)
        model_dir, train_file = prepare_data(a.quick, root)
        print(f"model: {model_dir}")
        for batch in batches:
            a.batch = batch
            for label, name in (("LoRA (fp32 base)", "ours_padded"), ("QLoRA (nf4 base)", "ours_qlora")):
                runs.append((batch, label, run_variant(name, a, model_dir, train_file, steps, time_box, root)))
    print(f"\n/proc/loadavg after: {loadavg()}\n")
    print("| batch | method | peak RSS MB (whole run) | peak RSS of the training steps MB | RSS after step 1 MB "
          "| model weights + buffers MB | steps | final loss | load (1 min) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for batch, label, r in runs:
        print(f"| {batch} | {label} | {r['peak_rss_mb']} | {r.get('train_peak_rss_mb')} | "
              f"{r.get('rss_after_first_step_mb')} | {r['model_mb']} | {r['steps']} | {r['final_loss']} | "
              f"{r['load'][0]}..{r['load'][1]} |")
    summary: dict[str, object] = {"loadavg": loadavg()}
    for batch in batches:
        lora, qlora = (r for b, _, r in runs if b == batch)
        summary[f"batch{batch}"] = {
            "lora_peak_rss_mb": lora["peak_rss_mb"], "qlora_peak_rss_mb": qlora["peak_rss_mb"],
            "qlora_vs_lora_peak_rss": round(qlora["peak_rss_mb"] / lora["peak_rss_mb"], 3),
            "lora_model_mb": lora["model_mb"], "qlora_model_mb": qlora["model_mb"],
            "qlora_vs_lora_model": round(qlora["model_mb"] / lora["model_mb"], 3)}
        print(f"batch {batch}: QLoRA / LoRA peak RSS x{summary[f'batch{batch}']['qlora_vs_lora_peak_rss']}, "
              f"model x{summary[f'batch{batch}']['qlora_vs_lora_model']}")
    print(json.dumps(summary))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the tiny random model, a few steps (< 1 min)")
    p.add_argument("--variants", default=None, help="comma list; default seed,ours,trl (+trl_packed without --quick)")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds of the non-seed variants")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--min-steps", type=int, default=2)
    p.add_argument("--memory", action="store_true", help="LoRA vs QLoRA peak RSS (SmolLM2; --quick: tiny model)")
    # internal: one variant in this process
    p.add_argument("--run-variant", help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    p.add_argument("--train-file", help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--time-box", type=float, default=0, help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.run_variant:
        child(a)
        return 0
    if a.memory:
        return memory_comparison(a)

    variants = (a.variants or ("seed,ours,trl" if a.quick else "seed,ours,trl,trl_packed,ours_padded")).split(",")
    rounds = a.rounds or (1 if a.quick else 2)
    # (steps, time box in s) per variant; the time box ends a variant early on a busy machine.
    plan = {"seed": (3, 10) if a.quick else (6, 90)}
    default = (6, 8) if a.quick else (40, 60)
    print(f"machine: {os.cpu_count()} CPUs, uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        root = Path(tmp)
        model_dir, train_file = prepare_data(a.quick, root)
        print(f"model: {model_dir}\ndata: {train_file}")
        results: dict[str, list[dict]] = {}
        if "seed" in variants:
            results["seed"] = [run_variant("seed", a, model_dir, train_file, *plan["seed"], root)]
        for r in range(rounds):
            order = [v for v in variants if v != "seed"]
            for name in (order if r % 2 == 0 else order[::-1]):
                results.setdefault(name, []).append(run_variant(name, a, model_dir, train_file, *default, root))
    table = {name: combine(rs) for name, rs in results.items()}
    print(f"uptime after: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    print()
    print("| variant | steps | non-pad tokens/s | non-pad tokens/CPU-s | padded positions | peak RSS MB "
          "| final loss | load (1 min) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, t in table.items():
        print(f"| {name} | {t['steps']} | {t['tokens_per_second']:.1f} | {t['tokens_per_cpu_second']:.1f} | "
              f"{t['padding_fraction']:.1%} | {t['peak_rss_mb']} | {t['final_loss']} | "
              f"{t['load'][0]}..{t['load'][1]} |")
    print("\nfinal loss: seed's includes prompt and padding tokens (labels = input_ids), so it is not comparable.")
    summary = {}
    for metric, suffix in (("tokens_per_second", ""), ("tokens_per_cpu_second", "_cpu")):
        ours = table.get("ours", {}).get(metric)
        trl_best = max((table[v][metric] for v in ("trl", "trl_packed") if v in table), default=None)
        seed = table.get("seed", {}).get(metric)
        summary[f"ours_vs_seed{suffix}"] = round(ours / seed, 2) if ours and seed else None
        summary[f"ours_vs_trl{suffix}"] = round(ours / trl_best, 3) if ours and trl_best else None
    summary["padding_fraction"] = table.get("ours", {}).get("padding_fraction")
    ours = table.get("ours", {}).get("tokens_per_second")
    for name in table:
        if name.startswith("ours_") and ours:
            summary[f"{name}_vs_ours"] = round(table[name]["tokens_per_second"] / ours, 3)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where greedy eval time goes on BANKING77, and faster variants compared with today's path in one process.

    python benchmarks/eval_speed.py                               # the embedded base model, 256 sampled test rows
    python benchmarks/eval_speed.py --model /path/to/merged_model --rows 256 --variants today,bf16,int8

A seeded sample of the official BANKING77 test rows (data/banking77/raw/test.csv),
prompted as configs/banking77.yaml prompts them (its system prompt, its
max_new_tokens and batch size), goes through each variant in turn. Every
variant's answers are compared with today's path (generate.py::generate_batched,
fp32, batch 32) row by row; accuracy is the label accuracy of the free answers.

First a breakdown of today's path: templating and tokenizing, the prompt
prefill (the first forward of each batch), the decode steps (the other
forwards) and the rest of `generate` (Python: logits processors, stopping,
cache bookkeeping), timed by wrapping the model's forward.

Prints one table: rows/s, the ratio to today's rows/s, answers identical to
today's, accuracy; and the load average before and after (the machine is shared,
so only ratios measured in the same run compare).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TEST_CSV = ROOT / "data" / "banking77" / "raw" / "test.csv"
LABELS = ROOT / "data" / "banking77" / "categories.json"
CONFIG = ROOT / "configs" / "banking77.yaml"


@dataclass
class Result:
    name: str
    seconds: float
    answers: list[str]
    note: str = ""
    breakdown: dict[str, float] = field(default_factory=dict)


def sample(rows: int, seed: int) -> tuple[list[list[dict]], list[str]]:
    """A seeded sample of the test rows, in test-file order: conversations and expected JSON answers."""
    from finetune_pipeline.lib.config import load_config

    system = load_config(CONFIG).data.mapping.default_system_prompt
    with open(TEST_CSV, newline="") as f:
        table = list(csv.DictReader(f))
    keep = sorted(random.Random(seed).sample(range(len(table)), min(rows, len(table))))
    conversations = [[{"role": "system", "content": system}, {"role": "user", "content": table[i]["text"]}]
                     for i in keep]
    return conversations, [json.dumps({"category": table[i]["category"]}) for i in keep]


@contextlib.contextmanager
def forward_timer(model, calls: list[tuple[int, float]]):
    """Records (query length, seconds) of every forward of `model` while inside."""
    original = model.forward

    def timed(*args, **kwargs):
        started = time.perf_counter()
        out = original(*args, **kwargs)
        ids = kwargs.get("input_ids", args[0] if args else None)
        calls.append((ids.shape[1] if ids is not None else 0, time.perf_counter() - started))
        return out

    model.forward = timed
    try:
        yield
    finally:
        model.forward = original


def breakdown(model, tokenizer, conversations, max_new_tokens: int, batch_size: int) -> Result:
    """Today's path, timed by part."""
    from finetune_pipeline.lib.evaluation.generate import _prompt_messages, generate_batched

    started = time.perf_counter()
    prompts = [tokenizer.apply_chat_template(_prompt_messages(c), add_generation_prompt=True, tokenize=False)
               for c in conversations]
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    templating = time.perf_counter() - started
    calls: list[tuple[int, float]] = []
    started = time.perf_counter()
    with forward_timer(model, calls):
        answers = generate_batched(model, tokenizer, conversations, max_new_tokens=max_new_tokens,
                                   batch_size=batch_size)
    total = time.perf_counter() - started
    prefill = sum(s for q, s in calls if q > 1)
    decode = sum(s for q, s in calls if q == 1)
    steps = sum(q == 1 for q, _ in calls)
    return Result("today (breakdown run)", total, answers,
                  note=f"{steps} decode steps, prompts {min(lengths)}-{max(lengths)} tokens "
                       f"(mean {sum(lengths) / len(lengths):.1f})",
                  breakdown={"templating + tokenizing (once more inside generate)": templating,
                             "prompt prefill (first forward of each batch)": prefill,
                             "decode steps (other forwards)": decode,
                             "rest of generate (Python, processors, stopping)": total - prefill - decode})


def timed_run(name: str, fn: Callable[[], list[str]], note: str = "") -> Result:
    started = time.perf_counter()
    answers = fn()
    return Result(name, time.perf_counter() - started, answers, note)


def accuracy(answers: list[str], expected: list[str], labels: list[str]) -> float:
    from finetune_pipeline.lib.evaluation.metrics.classification import classification_metrics

    return classification_metrics(answers, expected, "category", labels)["accuracy"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="a model folder (default: the embedded SmolLM2-135M-Instruct, "
                                                 "converted into data/model_cache)")
    p.add_argument("--rows", type=int, default=256, help="test rows sampled (default 256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=1,
                   help="rounds over the variants, interleaved; each variant's median seconds is reported (the "
                        "load of a shared machine drifts between variants, less so between rounds)")
    p.add_argument("--variants", default="today,bs16,bs64,cap,bf16,int8,constrained,likelihood",
                   help="comma-separated: today, bs16, bs64, cap, bf16, int8, constrained, likelihood")
    args = p.parse_args(argv)

    import torch

    from finetune_pipeline.lib.config import load_config
    from finetune_pipeline.lib.evaluation.classification import allowed_outputs
    from finetune_pipeline.lib.evaluation.constrained import (
        OutputTrie,
        eos_token_id,
        generate_constrained,
        output_token_ids,
    )
    from finetune_pipeline.lib.evaluation.generate import generate_batched
    from finetune_pipeline.lib.evaluation.likelihood import label_log_probs, ranked_labels, top_labels
    from finetune_pipeline.lib.models.base_models import load_for_inference, load_tokenizer, resolve_base_model

    load_before = os.getloadavg()
    cfg = load_config(CONFIG)
    model_dir = Path(args.model) if args.model else resolve_base_model(cfg.model.base_model,
                                                                        cfg.path(cfg.model_cache)).path
    model, tokenizer = load_for_inference(model_dir, "float32"), load_tokenizer(model_dir)
    labels = json.loads(LABELS.read_text())
    allowed = allowed_outputs("category", labels)
    conversations, expected = sample(args.rows, args.seed)
    max_new, batch = cfg.eval.max_new_tokens, cfg.eval.batch_size
    eos = eos_token_id(model, tokenizer)
    longest = OutputTrie([output_token_ids(tokenizer, o, eos) for o in allowed], eos).max_len
    print(f"eval speed: {model_dir.name}, {len(conversations)} BANKING77 test rows (seed {args.seed}), "
          f"max_new_tokens {max_new}, batch {batch}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
          f"load average {' '.join(f'{x:.2f}' for x in load_before)}", flush=True)

    def generate(m=model, **kw):
        return lambda: generate_batched(m, tokenizer, conversations, **{"max_new_tokens": max_new,
                                                                         "batch_size": batch, **kw})

    def copy_in(dtype):
        return load_for_inference(model_dir, "float32").to(dtype)

    def int8():
        return torch.ao.quantization.quantize_dynamic(load_for_inference(model_dir, "float32"),
                                                      {torch.nn.Linear}, dtype=torch.qint8)

    # Warm-up: the first generate pays one-off costs (oneDNN kernels, allocator) that no variant should carry.
    generate_batched(model, tokenizer, conversations[:batch], max_new_tokens=2, batch_size=batch)
    today = breakdown(model, tokenizer, conversations, max_new, batch)
    print("\nwhere today's time goes:")
    for part, seconds in today.breakdown.items():
        print(f"  {part:55s} {seconds:7.1f} s  {100 * seconds / today.seconds:5.1f}%")
    print(f"  ({today.note})", flush=True)

    variants: dict[str, Callable[[], Result]] = {
        "today": lambda: timed_run(f"today: generate_batched, fp32, batch {batch}", generate()),
        "bs16": lambda: timed_run("batch 16", generate(batch_size=16)),
        "bs64": lambda: timed_run("batch 64", generate(batch_size=64)),
        "cap": lambda: timed_run(f"max_new_tokens capped at the longest label ({longest})",
                                 generate(max_new_tokens=longest)),
        "bf16": lambda: timed_run("bf16 weights (avx512_bf16)", generate(m=copy_in(torch.bfloat16))),
        "int8": lambda: timed_run("int8 dynamic quantisation of Linear layers", generate(m=int8())),
        "constrained": lambda: timed_run("constrained to the labels (decoded, no reuse)", lambda: generate_constrained(
            model, tokenizer, conversations, allowed, batch_size=batch)),
        "likelihood": lambda: timed_run("likelihood of all 77 labels, every label scored (top-1)", lambda: [
            json.dumps({"category": top[0]}) for top in
            ranked_labels(label_log_probs(model, tokenizer, conversations, allowed), labels, 1)]),
        "likelihood-top3": lambda: timed_run("likelihood, exact top 3, scoring only what decides it", lambda: [
            json.dumps({"category": labels[top[0]]}) for top in top_labels(model, tokenizer, conversations, allowed, 3)]),
    }
    names = args.variants.split(",")
    for name in names:
        if name not in variants:
            p.error(f"--variants: unknown variant {name!r}; known: {', '.join(variants)}")
    rounds: dict[str, list[Result]] = {name: [] for name in names}
    for _ in range(args.repeat):
        for name in names:
            r = variants[name]()
            rounds[name].append(r)
            print(f"  {r.name}: {r.seconds:.1f} s", flush=True)
    results = [sorted(runs, key=lambda r: r.seconds)[len(runs) // 2] for runs in rounds.values()]  # the median
    base = next((r for r in results if r.name.startswith("today:")), today)
    print(f"\n| variant | rows/s | x today | answers = today's | accuracy % |\n|---|---|---|---|---|")
    for r in [today, *results]:
        same = sum(a == b for a, b in zip(r.answers, base.answers))
        print(f"| {r.name} | {len(r.answers) / r.seconds:.2f} | {base.seconds / r.seconds:.2f} | "
              f"{same}/{len(r.answers)} | {100 * accuracy(r.answers, expected, labels):.1f} |")
    print(f"\nload average before {' '.join(f'{x:.2f}' for x in load_before)}, after "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

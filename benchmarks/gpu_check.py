"""GPU check: LoRA training speed, padding-free correctness and generation speed on a random model.

    python benchmarks/gpu_check.py                                  # --shape all on the GPU (< 8 min on an H200)
    python benchmarks/gpu_check.py --shape smollm2-135m             # one shape
    python benchmarks/gpu_check.py --shape tiny --device cpu        # smoke run on a CPU (seconds)

Needs only torch, transformers and peft: no project code, no Dagster, no bitsandbytes, no vLLM, no network and
no model weights (models are random-initialised from a LlamaConfig, data are random token ids). Run it from
the repo root on a lent GPU machine as it is; nothing needs installing there.

Shapes (LlamaConfig, tied embeddings):
- smollm2-135m: SmolLM2-135M (hidden 576, 30 layers, 9 heads, 3 kv heads, intermediate 1536, vocab 49152).
- llama-1b: Llama-3.2-1B (hidden 2048, 16 layers, 32 heads, 8 kv heads, intermediate 8192, vocab 128256;
  plain RoPE, the llama3 rope scaling changes no cost).
- tiny: 2 layers of width 64, for the CPU smoke run.
- all: smollm2-135m, then llama-1b.

Per shape, in this order:
1. Packed-vs-unpacked loss check, before any training. The same sequences (12, of 8 to 64 random tokens) go
   through the model once as a right-padded batch (attention_mask, labels -100 on padding) and once as one
   padding-free row built by transformers' DataCollatorWithFlattening (sequences concatenated, position_ids
   restarting at 0 per sequence, label -100 on each sequence's first token, no attention_mask). Both losses
   are the token-weighted mean over the same predicted tokens, so they must be equal up to rounding:
   - bf16, with the attention kernel training uses: |diff| <= 5e-3 (bf16 keeps 8 significant bits; the
     loss, about ln(vocab) ~ 11, is a mean over ~400 tokens so rounding mostly cancels: measured 4e-4 on
     CPU for the SmolLM2 shape, so the tolerance is over 10x that and 0.05% of the loss).
   - fp32 with sdpa (flash kernels are half precision only) and TF32 off: |diff| <= 1e-4 (measured <= 1e-6).
   A check that cannot fail proves nothing, so each precision also runs the classic bug: the packed row
   with an all-ones attention_mask, which makes every sequence attend to the ones before it. That loss
   must differ from the padded one by more than the tolerance (measured 0.07 on the SmolLM2 shape, 0.03 on
   tiny); otherwise the check reports "inconclusive" and fails. The exit code is 1 if any check fails.
   Weights are drawn with std 1/sqrt(hidden) (fan-in scale, like a trained model's), not transformers'
   0.02: at 0.02 attention is nearly uniform and the bug moved the tiny model's loss by only 8e-4.
   Note use_cache=False everywhere: with a cache object present transformers does not detect packed
   position_ids and silently lets sequences see each other under sdpa.
2. LoRA training (peft, r 16, alpha 32, dropout 0.05, all linear layers; base weights in bf16, adapter
   weights in fp32 as peft keeps them; AdamW lr 1e-4) on padding-free rows of --tokens-per-step tokens made
   of random-length sequences, with a variable-length attention kernel when one is importable
   (flash_attention_3, then flash_attention_2; else sdpa, which packs with a dense block-diagonal mask and
   so pays attention over the whole row). Two untimed warm-up steps, then timed steps until the training
   time slice (--train-seconds) is spent. Train tokens/s = tokens in timed steps / their seconds (every
   position in a padding-free row is a real token).
   MFU = 6 * params * train_tokens_per_s / peak dense bf16 FLOP/s of the GPU (H100/H200 SXM 989e12,
   H100 PCIe 756e12, A100 312e12; --peak-tflops for others; null on CPU). params counts every base
   weight once (the tied embedding once: it costs one lm_head matmul); attention-score FLOPs are left out.
   With LoRA the frozen weights get no weight gradient, so the work done is nearer 4 * params per token:
   6 * params is the convention that makes figures comparable with full fine-tuning, not the work done.
   Peak GPU memory is torch.cuda.max_memory_allocated over the training phase.
3. Batched greedy generation with the merged model: left-padded prompts of varied lengths, exactly
   --new-tokens new tokens per row (min_new_tokens = max_new_tokens, so early EOS cannot shorten it);
   generated tokens/s = rows * new tokens / seconds, after one short warm-up call.

Time budget (--max-seconds, default 420 of the 8 minutes, the rest for imports and CUDA start-up): each
shape's training slice is --train-seconds (default 45) or what the budget leaves after reserving 30 s per
remaining phase, whichever is smaller; a phase that the budget cannot hold is skipped and reported as
skipped (the loss check always runs). Steps are sized conservatively for an H200: a training step is one
row of 16384 tokens (smollm2-135m) or 8192 (llama-1b; its 128k-vocab logits in fp32 take 4 GB per row),
each well under a second there even with sdpa, so the clock is checked at least once a second; generation
is 32 rows x 128 new tokens (~130 decode steps, seconds). Estimated, not measured (no GPU has been lent
yet): --shape all takes about 2 x (build 5 s + checks 5 s + training 50 s + generation 10 s) + start-up,
i.e. 3 minutes; the budget caps it at 7 minutes plus start-up whatever the GPU.

Output: a human-readable table, then, as the LAST stdout line, one JSON object:
{"device", "device_type", "torch", "transformers", "peft", "cuda", "mfu_formula", "passed", "wall_seconds",
 "results": [{"shape", "params", "dtype", "attn_implementation", "attn_note", "tokens_per_step",
   "train_steps", "train_tokens_per_s", "mfu", "peak_gpu_memory_gb", "loss_check_passed",
   "loss_checks": [{"dtype", "attn_implementation", "padded_loss", "packed_loss", "diff", "tolerance",
                    "boundary_bug_diff", "passed", "verdict"}],
   "generation_tokens_per_s", "generation", "skipped", "error", "wall_seconds"}]}
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field

import peft
import torch
import transformers
from peft import LoraConfig, get_peft_model
from transformers import DataCollatorWithFlattening, LlamaConfig, LlamaForCausalLM

SHAPES: dict[str, dict[str, float]] = {  # LlamaConfig fields
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "intermediate_size": 128, "vocab_size": 1024, "max_position_embeddings": 2048},
    "smollm2-135m": {"hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
                     "num_key_value_heads": 3, "intermediate_size": 1536, "vocab_size": 49152,
                     "max_position_embeddings": 8192, "rope_theta": 100000.0, "rms_norm_eps": 1e-5},
    "llama-1b": {"hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32,
                 "num_key_value_heads": 8, "intermediate_size": 8192, "vocab_size": 128256,
                 "max_position_embeddings": 131072, "rope_theta": 500000.0, "rms_norm_eps": 1e-5},
}
ALL_SHAPES = ["smollm2-135m", "llama-1b"]


@dataclass(frozen=True)
class Plan:
    """How much work one shape gets: sized so that no single step runs long on an H200."""

    tokens_per_step: int
    train_lengths: tuple[int, int]  # random sequence lengths in a training row, inclusive
    gen_rows: int
    prompt_lengths: tuple[int, int]
    new_tokens: int


PLANS = {
    "tiny": Plan(tokens_per_step=512, train_lengths=(16, 128), gen_rows=4, prompt_lengths=(4, 16), new_tokens=8),
    "smollm2-135m": Plan(16384, (64, 2048), 32, (32, 256), 128),
    "llama-1b": Plan(8192, (64, 2048), 32, (32, 256), 128),
}

# Dense bf16 tensor-core peaks, FLOP/s, matched against torch.cuda.get_device_name() in this order.
PEAK_BF16_FLOPS = [("H100 PCIe", 756e12), ("H200", 989e12), ("H100", 989e12), ("A100", 312e12)]
MFU_FORMULA = "6 * params * train_tokens_per_s / peak_dense_bf16_flops"
TOLERANCE = {torch.bfloat16: 5e-3, torch.float32: 1e-4}
CHECK_SEQUENCES, CHECK_LENGTHS = 12, (8, 64)
WARMUP_STEPS = 2
PHASE_RESERVE_S = 30.0  # kept back per phase still to come, so a late phase is skipped rather than overrun
LORA = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")


# --- results --------------------------------------------------------------------------------------------------

@dataclass
class LossCheck:
    dtype: str
    attn_implementation: str
    padded_loss: float
    packed_loss: float
    diff: float
    tolerance: float
    boundary_bug_diff: float  # the packed row with an all-ones attention_mask: what the check must catch
    passed: bool
    verdict: str


@dataclass
class ShapeResult:
    shape: str
    params: int
    dtype: str
    attn_implementation: str
    attn_note: str
    tokens_per_step: int
    loss_checks: list[LossCheck] = field(default_factory=list)
    loss_check_passed: bool = False
    train_steps: int | None = None
    train_tokens_per_s: float | None = None
    mfu: float | None = None
    peak_gpu_memory_gb: float | None = None
    generation_tokens_per_s: float | None = None
    generation: dict | None = None
    skipped: list[str] = field(default_factory=list)
    error: str | None = None  # what stopped this shape early (e.g. out of GPU memory); later shapes still run
    wall_seconds: float = 0.0


class Budget:
    """Wall-clock budget for the whole run."""

    def __init__(self, seconds: float):
        self.start, self.seconds = time.monotonic(), seconds

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self, phases_after: int = 0) -> float:
        return self.seconds - self.elapsed() - phases_after * PHASE_RESERVE_S


# --- device, dtype, attention --------------------------------------------------------------------------------

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), None)
    except OSError:
        model = None
    return f"CPU: {model or platform.processor() or platform.machine()}"


def bf16_works(device: torch.device) -> bool:
    """bf16 where the hardware has it; on CPU, try the ops training needs (fp32 fallback if they fail)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        x = torch.randn(4, 8, 8, dtype=torch.bfloat16, requires_grad=True)
        torch.nn.functional.scaled_dot_product_attention(x, x, x, is_causal=True).sum().backward()
        return True
    except RuntimeError:
        return False


def pick_dtype(requested: str, device: torch.device) -> tuple[torch.dtype, str]:
    if requested == "float32":
        return torch.float32, "float32 requested"
    if bf16_works(device):
        return torch.bfloat16, "bf16"
    if requested == "bfloat16":
        raise SystemExit(f"--dtype bfloat16: bf16 does not work on {device_name(device)}; use --dtype auto")
    return torch.float32, "bf16 unsupported here: fp32 fallback"


def variable_length_kernels() -> list[str]:
    """Flash kernels transformers can use from installed packages (no download from the kernels hub)."""
    from transformers import utils

    found = []
    for name, probe in (("flash_attention_3", "is_flash_attn_3_available"),
                        ("flash_attention_2", "is_flash_attn_2_available")):
        available = getattr(utils, probe, None)
        if available is not None and available():
            found.append(name)
    return found


def pick_attention(requested: str, device: torch.device, dtype: torch.dtype) -> tuple[list[str], str]:
    """Candidates in order of preference, and why: flash kernels run half precision on CUDA only."""
    if requested != "auto":
        return [requested, "sdpa"] if requested != "sdpa" else ["sdpa"], f"{requested} requested"
    if device.type != "cuda" or dtype == torch.float32:
        return ["sdpa"], "sdpa: no flash kernel runs on CPU or in fp32"
    kernels = variable_length_kernels()
    if not kernels:
        return ["sdpa"], "sdpa: no flash-attn package importable (padding-free rows use a dense block mask)"
    return kernels + ["sdpa"], f"{kernels[0]}: variable-length kernel importable"


def peak_flops(device: torch.device, override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_BF16_FLOPS if key in name), None)


# --- model and data ------------------------------------------------------------------------------------------

def build_model(shape: str, dtype: torch.dtype, attn: str, device: torch.device, seed: int) -> LlamaForCausalLM:
    config = LlamaConfig(tie_word_embeddings=True, **SHAPES[shape])
    # fan-in scale: attention then depends on content, so a leak across sequence boundaries shows in the loss
    config.initializer_range = config.hidden_size ** -0.5
    torch.manual_seed(seed)
    with torch.device(device):  # initialise on the device: a 1B model inits in seconds on a GPU, not on the CPU
        model = LlamaForCausalLM._from_config(config, dtype=dtype, attn_implementation=attn)
    model.generation_config.pad_token_id = 0
    return model


def build_with_fallback(shape, dtype, candidates, note, device, seed) -> tuple[LlamaForCausalLM, str, str]:
    """The first attention implementation that loads and runs a packed row; says why when it falls back."""
    for attn in candidates:
        try:
            model = build_model(shape, dtype, attn, device, seed)
            with torch.no_grad():  # a kernel can import yet fail on this GPU: find out before the real work
                model(**packed_row([[1, 2, 3], [4, 5]], device), use_cache=False)
            return model, attn, note
        except (ImportError, ValueError, RuntimeError) as error:
            note = f"{attn} failed ({str(error).splitlines()[0][:200]}), fell back"
    raise SystemExit(f"--attn: none of {candidates} loads: {note}")


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() yields a tied weight once


def random_sequences(count: int, lengths: tuple[int, int], vocab: int, generator: torch.Generator) -> list[list[int]]:
    sizes = torch.randint(lengths[0], lengths[1] + 1, (count,), generator=generator).tolist()
    # token 0 is the pad id: keep it out of the data so padding is never mistaken for text
    return [torch.randint(1, vocab, (n,), generator=generator).tolist() for n in sizes]


def packed_row(sequences: list[list[int]], device: torch.device) -> dict[str, torch.Tensor]:
    """transformers' own padding-free collation: one row, position_ids restart, -100 on each first token."""
    batch = DataCollatorWithFlattening()([{"input_ids": s} for s in sequences])
    return {key: value.to(device) for key, value in batch.items()}


def padded_batch(sequences: list[list[int]], device: torch.device) -> dict[str, torch.Tensor]:
    """The same sequences right-padded, labels -100 on padding (the loss shifts labels itself)."""
    width = max(len(s) for s in sequences)
    ids = torch.zeros(len(sequences), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, seq in enumerate(sequences):
        ids[row, :len(seq)] = torch.tensor(seq)
        mask[row, :len(seq)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def training_rows(plan: Plan, vocab: int, device: torch.device, count: int, seed: int) -> list[dict]:
    """`count` padding-free rows of exactly plan.tokens_per_step tokens (the last sequence is cut to fit)."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(count):
        sequences, total = [], 0
        while total < plan.tokens_per_step:
            seq = random_sequences(1, plan.train_lengths, vocab, generator)[0][: plan.tokens_per_step - total]
            if len(seq) < 2:  # a 1-token sequence predicts nothing
                break
            sequences.append(seq)
            total += len(seq)
        rows.append(packed_row(sequences, device))
    return rows


# --- the three phases ----------------------------------------------------------------------------------------

@torch.no_grad()
def loss_check(model: LlamaForCausalLM, attn: str, vocab: int, device: torch.device, seed: int) -> LossCheck:
    """Padded batch vs one padding-free row: the same token-weighted mean loss, up to rounding."""
    model.eval()
    sequences = random_sequences(CHECK_SEQUENCES, CHECK_LENGTHS, vocab, torch.Generator().manual_seed(seed))
    padded = model(**padded_batch(sequences, device), use_cache=False).loss.item()
    row = packed_row(sequences, device)
    packed = model(**row, use_cache=False).loss.item()
    leaky = model(**row, attention_mask=torch.ones_like(row["input_ids"]), use_cache=False).loss.item()
    dtype = next(model.parameters()).dtype
    tolerance = TOLERANCE[dtype]
    diff, bug_diff = abs(packed - padded), abs(leaky - padded)
    if diff > tolerance:
        verdict = f"FAIL: packed and padded losses differ by {diff:.2e} > {tolerance:.0e}"
    elif bug_diff <= tolerance:
        verdict = f"FAIL (inconclusive): the boundary bug moves the loss only {bug_diff:.2e} <= {tolerance:.0e}"
    else:
        verdict = "pass"
    return LossCheck(str(dtype).removeprefix("torch."), attn, padded, packed, diff, tolerance, bug_diff,
                     verdict == "pass", verdict)


def fp32_loss_check(shape: str, device: torch.device, seed: int) -> LossCheck:
    """The same check in fp32 with sdpa and TF32 off, where rounding leaves almost nothing to hide behind."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        model = build_model(shape, torch.float32, "sdpa", device, seed)
        check = loss_check(model, "sdpa", model.config.vocab_size, device, seed)
    finally:
        torch.set_float32_matmul_precision(previous)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return check


def train_lora(model, plan: Plan, device: torch.device, seconds: float, seed: int):
    """LoRA steps on padding-free rows; returns (peft model, timed steps, tokens/s, peak GPU GB)."""
    model = get_peft_model(model, LORA)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4,
                                  foreach=True)
    rows = training_rows(plan, model.config.vocab_size, device, count=4, seed=seed)

    def step(row) -> None:
        model(**row, use_cache=False).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for index in range(WARMUP_STEPS):  # first steps pay kernel selection and allocator growth
        step(rows[index % len(rows)])
    sync(device)
    steps, tokens, start = 0, 0, time.monotonic()
    while steps == 0 or time.monotonic() - start < seconds:
        row = rows[steps % len(rows)]
        step(row)
        sync(device)
        steps += 1
        tokens += row["input_ids"].numel()
    tokens_per_s = tokens / (time.monotonic() - start)
    peak_gb = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return model, steps, tokens_per_s, peak_gb


@torch.no_grad()
def generation_speed(model, plan: Plan, device: torch.device, seed: int) -> dict:
    """Batched greedy decoding from left-padded prompts; every row makes exactly plan.new_tokens tokens."""
    model.eval()
    prompts = random_sequences(plan.gen_rows, plan.prompt_lengths, model.config.vocab_size,
                               torch.Generator().manual_seed(seed))
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):  # left padding: every row's last prompt token is at the same column
        ids[row, width - len(prompt):] = torch.tensor(prompt)
        mask[row, width - len(prompt):] = 1
    ids, mask = ids.to(device), mask.to(device)

    def generate(new_tokens: int) -> torch.Tensor:
        return model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=new_tokens,
                              min_new_tokens=new_tokens, pad_token_id=0)

    generate(4)  # warm-up: kernel selection, cache allocation
    sync(device)
    start = time.monotonic()
    out = generate(plan.new_tokens)
    sync(device)
    seconds = time.monotonic() - start
    made = (out.shape[1] - width) * out.shape[0]
    return {"rows": len(prompts), "prompt_tokens": [min(map(len, prompts)), width],
            "new_tokens_per_row": out.shape[1] - width, "seconds": round(seconds, 3),
            "tokens_per_s": made / seconds}


# --- one shape, the run --------------------------------------------------------------------------------------

def run_shape(shape: str, args, device: torch.device, budget: Budget, phases_after: int) -> ShapeResult:
    start = time.monotonic()
    plan = PLANS[shape]
    if args.tokens_per_step:
        plan = Plan(args.tokens_per_step, plan.train_lengths, plan.gen_rows, plan.prompt_lengths, plan.new_tokens)
    if args.new_tokens:
        plan = Plan(plan.tokens_per_step, plan.train_lengths, plan.gen_rows, plan.prompt_lengths, args.new_tokens)
    dtype, dtype_note = pick_dtype(args.dtype, device)
    candidates, note = pick_attention(args.attn, device, dtype)
    model, attn, note = build_with_fallback(shape, dtype, candidates, note, device, args.seed)
    result = ShapeResult(shape, count_params(model), str(dtype).removeprefix("torch."), attn,
                         f"{note}; {dtype_note}", plan.tokens_per_step)
    print(f"[{shape}] {result.params / 1e6:.1f}M params, {result.dtype}, attention {attn} ({note})", flush=True)

    if dtype == torch.bfloat16:
        result.loss_checks.append(loss_check(model, attn, model.config.vocab_size, device, args.seed))
    else:
        result.skipped.append(f"bf16 loss check: training runs in fp32 ({dtype_note})")
    result.loss_checks.append(fp32_loss_check(shape, device, args.seed))
    result.loss_check_passed = all(check.passed for check in result.loss_checks)
    for check in result.loss_checks:
        print(f"[{shape}] loss check {check.dtype}/{check.attn_implementation}: {check.verdict} "
              f"({time.monotonic() - start:.1f} s into the shape)", flush=True)

    train_seconds = min(args.train_seconds, budget.left(phases_after))
    if train_seconds <= 0:
        result.skipped.append("training and generation: out of --max-seconds")
    else:
        model, result.train_steps, result.train_tokens_per_s, result.peak_gpu_memory_gb = train_lora(
            model, plan, device, train_seconds, args.seed)
        flops = peak_flops(device, args.peak_tflops)
        result.mfu = 6 * result.params * result.train_tokens_per_s / flops if flops else None
        print(f"[{shape}] training: {result.train_steps} timed steps, {result.train_tokens_per_s:,.0f} tokens/s "
              f"({time.monotonic() - start:.1f} s into the shape)", flush=True)
        model = model.merge_and_unload()  # serve-like: generation runs the merged weights
        if budget.left(phases_after - 1) <= 0:
            result.skipped.append("generation: out of --max-seconds")
        else:
            result.generation = generation_speed(model, plan, device, args.seed)
            result.generation_tokens_per_s = result.generation["tokens_per_s"]
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    result.wall_seconds = round(time.monotonic() - start, 1)
    return result


def fmt(value, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def print_table(results: list[ShapeResult]) -> None:
    rows = [
        ("params", lambda r: f"{r.params / 1e6:.1f}M"),
        ("dtype", lambda r: r.dtype),
        ("attention", lambda r: r.attn_implementation),
        ("tokens/step", lambda r: f"{r.tokens_per_step:,}"),
        ("train steps (timed)", lambda r: fmt(r.train_steps)),
        ("train tokens/s", lambda r: fmt(r.train_tokens_per_s, ",.0f")),
        ("MFU", lambda r: fmt(r.mfu, ".1%")),
        ("peak GPU memory GB", lambda r: fmt(r.peak_gpu_memory_gb, ".2f")),
        *[(f"loss diff {i}", lambda r, i=i: (
            f"{r.loss_checks[i].dtype}: {r.loss_checks[i].diff:.1e} (tol {r.loss_checks[i].tolerance:.0e}, "
            f"bug {r.loss_checks[i].boundary_bug_diff:.1e}) {'pass' if r.loss_checks[i].passed else 'FAIL'}"
            if i < len(r.loss_checks) else "-")) for i in range(2)],
        ("generation tokens/s", lambda r: fmt(r.generation_tokens_per_s, ",.0f")),
        ("wall s", lambda r: f"{r.wall_seconds:.1f}"),
    ]
    widths = [22] + [max(44, len(r.shape)) for r in results]
    print("".join(h.ljust(w) for h, w in zip(["", *(r.shape for r in results)], widths)))
    for label, cell in rows:
        print("".join(c.ljust(w) for c, w in zip([label, *(cell(r) for r in results)], widths)))
    for r in results:
        for note in [r.attn_note, *r.skipped, *([f"ERROR {r.error}"] if r.error else [])]:
            print(f"{r.shape}: {note}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", choices=[*SHAPES, "all"], default="all")
    parser.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda if available)")
    parser.add_argument("--dtype", choices=["auto", "bfloat16", "float32"], default="auto",
                        help="training dtype; auto = bf16 where it works, else fp32")
    parser.add_argument("--attn", default="auto",
                        help="attention implementation: auto (flash_attention_3/2 if importable, else sdpa), or a "
                             "transformers name such as sdpa, eager, flash_attention_2")
    parser.add_argument("--max-seconds", type=float, default=420.0, help="wall-clock budget for the whole run")
    parser.add_argument("--train-seconds", type=float, default=45.0, help="timed training per shape")
    parser.add_argument("--tokens-per-step", type=int, default=0,
                        help="override the shape's training row length (at least 2)")
    parser.add_argument("--new-tokens", type=int, default=0, help="override the shape's generated tokens per row")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak dense bf16 TFLOP/s for MFU")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.tokens_per_step and args.tokens_per_step < 2:
        raise SystemExit(f"--tokens-per-step {args.tokens_per_step}: a row needs at least 2 tokens to predict one")
    budget = Budget(args.max_seconds)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: torch {torch.__version__} sees no CUDA device")
    shapes = ALL_SHAPES if args.shape == "all" else [args.shape]
    results = []
    for index, shape in enumerate(shapes):
        phases_after = 1 + 2 * (len(shapes) - index - 1)  # this shape's generation, later shapes' two phases
        try:
            results.append(run_shape(shape, args, device, budget, phases_after))
        except Exception as error:  # noqa: BLE001 - a lent GPU is one-shot: keep the other shape's figures
            traceback.print_exc()
            results.append(ShapeResult(shape, 0, "", "", "", 0, error=f"{type(error).__name__}: {error}"[:500]))
            if device.type == "cuda":
                torch.cuda.empty_cache()
    print_table(results)
    passed = all(r.loss_check_passed and r.error is None for r in results)
    summary = {
        "device": device_name(device), "device_type": device.type, "torch": torch.__version__,
        "transformers": transformers.__version__, "peft": peft.__version__, "cuda": torch.version.cuda,
        "mfu_formula": MFU_FORMULA, "passed": passed, "wall_seconds": round(budget.elapsed(), 1),
        "results": [asdict(r) for r in results],
    }
    print(json.dumps(summary))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())

"""benchmarks/gpu_check.py: its CPU smoke run works and it stays runnable on a bare GPU machine.

The GPU figures themselves need a lent device; here the tiny shape runs on the CPU in seconds, through the
same code paths (packed-vs-padded loss check, LoRA steps on padding-free rows, batched greedy generation).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
# What a lent GPU machine has: anything else imported would break the script there.
ALLOWED_THIRD_PARTY = {"torch", "transformers", "peft"}


def test_gpu_check_imports_only_torch_transformers_and_peft():
    tree = ast.parse(SCRIPT.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    third_party = imported - set(sys.stdlib_module_names) - {"__future__"}
    assert third_party == ALLOWED_THIRD_PARTY


def test_gpu_check_tiny_cpu_run_passes_and_reports_every_field():
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--shape", "tiny", "--device", "cpu", "--train-seconds", "0.5",
         "--max-seconds", "120"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])

    assert summary["passed"] is True
    assert summary["device_type"] == "cpu" and summary["device"].startswith("CPU")
    for key in ("torch", "transformers", "peft", "mfu_formula", "wall_seconds"):
        assert summary[key]
    [result] = summary["results"]
    assert result["shape"] == "tiny" and result["params"] > 0
    assert result["attn_implementation"] == "sdpa"  # no flash kernel on a CPU
    assert result["train_steps"] >= 1 and result["train_tokens_per_s"] > 0
    assert result["mfu"] is None and result["peak_gpu_memory_gb"] is None  # no GPU peak to divide by
    assert result["generation"]["new_tokens_per_row"] == 8 and result["generation_tokens_per_s"] > 0

    checks = {check["dtype"]: check for check in result["loss_checks"]}
    assert set(checks) == {result["dtype"], "float32"}
    for check in checks.values():
        # equal within tolerance, and the boundary bug it guards against would have been caught
        assert check["passed"] and check["diff"] <= check["tolerance"] < check["boundary_bug_diff"]
    assert checks["float32"]["tolerance"] <= 1e-4

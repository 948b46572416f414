"""Eval speed: the opt-in eval dtype reaches the backend (and its recipe), and benchmarks/eval_speed.py runs."""

import subprocess
import sys

from finetune_pipeline.lib import PROJECT_ROOT
from finetune_pipeline.lib.config import load_config
from finetune_pipeline.lib.evaluation.backends import backend_for
from finetune_pipeline_tests.helpers import SAMPLE_RAW, write_config


def test_eval_dtype_overrides_the_model_dtype_for_the_transformers_backend(tmp_path):
    default = load_config(write_config(tmp_path, SAMPLE_RAW)).eval
    bf16 = load_config(write_config(tmp_path, SAMPLE_RAW, eval={"dtype": "bfloat16"})).eval
    weights = tmp_path / "weights"
    assert backend_for(default, "v", weights=weights, dtype="float32").identity()["dtype"] == "float32"
    # The identity is part of model_eval's recipe key: a bf16 eval is never mistaken for an fp32 one.
    assert backend_for(bf16, "v", weights=weights, dtype="float32").identity()["dtype"] == "bfloat16"


def test_the_speed_benchmark_compares_variants_with_todays_answers(tiny_model_dir):
    out = subprocess.run([sys.executable, str(PROJECT_ROOT / "benchmarks" / "eval_speed.py"), "--model",
                          str(tiny_model_dir), "--rows", "6", "--variants", "today,cap,likelihood"],
                         capture_output=True, text=True, timeout=600, cwd=PROJECT_ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    table = [line for line in out.stdout.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| variant | rows/s | x today | answers = today's")
    today = next(line for line in table if line.startswith("| today: generate_batched"))
    assert "| 1.00 | 6/6 |" in today  # today's path against itself
    assert len(table) == 1 + 4  # the header, the breakdown run and three variants
    assert "prompt prefill" in out.stdout and "load average before" in out.stdout

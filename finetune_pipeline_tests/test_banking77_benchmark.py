"""benchmarks/banking77.py runs end to end (on the tiny random model and 20 test rows, so it is quick here):
its stages, the prompting baseline from configs/banking77.yaml, the general suite and the verdict."""

from __future__ import annotations

import importlib.util
import json

import pytest

from finetune_pipeline.lib import PROJECT_ROOT


@pytest.mark.slow
def test_banking77_benchmark_prints_baselines_forgetting_and_the_verdict(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("banking77_bench", PROJECT_ROOT / "benchmarks" / "banking77.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--base-model", "tiny-random", "--limit", "20", "--epochs", "0.05", "--quiet",
                       "--artifacts", str(tmp_path / "artifacts"), "--fast-dtype", "bfloat16"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["test_rows"] == 20 and list(summary["baselines_accuracy"]) == ["prompt-tiny-random-10shot-" +
                                                                                  list(summary["baselines_accuracy"])[0][-8:]]
    table = out.split("| model |", 1)[1]
    assert "(prompting baseline), free generation" in table and "fine-tuned (LoRA), constrained to the labels" in table
    assert "general drift" in table and "$/1k requests" in table
    # The fine-tuned version is evaluated a second time the fast way, on the same rows, and the two compared.
    assert "fine-tuned (LoRA), label decoding (answers: constrained, no free pass)" in table
    assert "fine-tuned eval of 20 rows, fast (label decoding" in out
    # --fast-dtype: the fast eval alone in bf16; the free eval it is compared with keeps the config's dtype.
    assert "eval finetuned (label decoding, bfloat16) done" in out and "eval finetuned (free + constrained) done" in out
    assert 0 <= summary["fast_accuracy"] <= 1 and summary["fast_speedup"] > 0
    assert "verdict:" in out and "Forgetting: " in out.split("verdict:", 1)[1]

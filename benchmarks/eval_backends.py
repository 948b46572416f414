"""The eval backends side by side: transformers (in process) vs vllm (offline vllm.LLM, serving environment).

    python benchmarks/eval_backends.py                      # the demo's merged LoRA version on its eval set
    python benchmarks/eval_backends.py --classify ""        # free generation only (no constrained pass)
    python benchmarks/eval_backends.py --limit 20 --version lora-...

Run `finetune-pipeline demo` first (its artifacts are what is evaluated) and
have a serving environment (`scripts/setup.sh serve`, or
FINETUNE_PIPELINE_SERVE_PYTHON pointing at one). Both backends run in this
process's run, one after the other, on the same rows with the same settings,
scored by lib/evaluation/evaluate.py exactly as model_eval scores them;
nothing is written to the artifact store.

By default `category` is also evaluated as a classification field with
constrained decoding (the demo config itself does not ask for it), so the
constrained path of both backends is measured too.

Prints a markdown table: each metric for both backends, rows/s of free and of
constrained generation, vLLM's start-up seconds, and /proc/loadavg before and
after each backend (on a shared machine the load is part of every figure), and
how many of vLLM's answers are identical to transformers'. The transformers
figures include loading the model (about 2 s); vLLM's start-up is shown apart.
The last line is one JSON object with the same figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from finetune_pipeline.lib.config import load_config  # noqa: E402
from finetune_pipeline.lib.evaluation.backends import TransformersBackend, VllmBackend, close_backend  # noqa: E402
from finetune_pipeline.lib.evaluation.evaluate import EvalSubject, evaluate  # noqa: E402
from finetune_pipeline.lib.models.serving_env import SETUP_HINT, serving_python  # noqa: E402
from finetune_pipeline.lib.reporting.markdown import markdown_table  # noqa: E402
from finetune_pipeline.lib.stages.common import registry, store  # noqa: E402
from finetune_pipeline.lib.stages.evaluation import eval_inputs  # noqa: E402


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def newest_merged_version(cfg) -> str:
    merged = [v for v in registry(cfg).versions() if v.kind == "lora_merged"]
    if not merged:
        sys.exit(f"no lora_merged version under {cfg.artifacts_dir}: run `finetune-pipeline demo` first")
    return max(merged, key=lambda v: v.registered_at).key


def newest_eval_set(cfg) -> str:
    folders = [p for p in (cfg.artifacts_dir / "eval_set").glob("*") if (p / "test.jsonl").is_file()]
    if not folders:
        sys.exit(f"no eval_set under {cfg.artifacts_dir}: run `finetune-pipeline demo` first")
    return max(folders, key=lambda p: p.stat().st_mtime).name


def run(backend, records, settings, subject) -> dict[str, Any]:
    before = loadavg()
    started = time.time()
    try:
        report = evaluate(backend, records, settings, subject)
    finally:
        close_backend(backend)
    wall = time.time() - started
    startup = getattr(backend, "startup_seconds", None) or 0.0
    c = report.classification
    constrained_s = c.constrained_seconds if c is not None and c.constrained_seconds else None
    free_s = report.generation_seconds - startup  # vLLM's start-up is paid once, inside the first generate
    return {"metrics": report.metrics, "answers": [r.prediction for r in report.predictions],
            "constrained_answers": [r.prediction for r in report.constrained_predictions], "startup_s": round(startup, 1) if startup else None,
            "free_s": round(free_s, 1), "free_rows_per_s": round(len(records) / free_s, 2),
            "constrained_s": constrained_s,
            "constrained_rows_per_s": round(len(records) / constrained_s, 2) if constrained_s else None,
            "wall_s": round(wall, 1), "loadavg_before": before, "loadavg_after": loadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    parser.add_argument("--version", help="the model version key (default: the newest lora_merged version)")
    parser.add_argument("--eval-set", help="the eval_set artifact key (default: the newest)")
    parser.add_argument("--limit", type=int, default=0, help="the first N test rows (default: all)")
    parser.add_argument("--classify", default="category",
                        help="an output field to score as a label, with constrained decoding ('' = none)")
    args = parser.parse_args()
    if serving_python() is None:
        sys.exit(f"no serving environment for vLLM: {SETUP_HINT}")

    cfg = load_config(args.config)
    cfg.eval.limit = args.limit
    if args.classify:
        cfg.eval.classification.field, cfg.eval.classification.constrained = args.classify, True
    key = args.version or newest_merged_version(cfg)
    eval_set_ref = store(cfg).find("eval_set", args.eval_set or newest_eval_set(cfg))
    version = registry(cfg).get(key)
    weights = version.weights_dir(store(cfg))
    records, settings = eval_inputs(cfg, eval_set_ref)
    subject = EvalSubject(version=key, kind=version.kind, eval_set=eval_set_ref.key,
                          test_file=str(eval_set_ref.dir / "test.jsonl"))
    print(f"version {key} on eval set {eval_set_ref.key}: {len(records)} rows, max_new_tokens "
          f"{settings.max_new_tokens}, classification {args.classify or 'none'}", flush=True)

    results = {}
    for name, backend in (("transformers", TransformersBackend(weights, cfg.eval.batch_size)),
                          ("vllm", VllmBackend(weights, cfg.eval.vllm))):
        print(f"evaluating with {name} ...", flush=True)
        results[name] = run(backend, records, settings, subject)

    t, v = results["transformers"], results["vllm"]
    names = list(dict.fromkeys([*t["metrics"], *v["metrics"]]))
    rows = [[m, t["metrics"].get(m, ""), v["metrics"].get(m, "")] for m in names]
    rows += [[figure, t[field] if t[field] is not None else "", v[field] if v[field] is not None else ""]
             for figure, field in (("free generation rows/s", "free_rows_per_s"),
                                   ("free generation s", "free_s"),
                                   ("constrained rows/s", "constrained_rows_per_s"),
                                   ("start-up s (engine / model load)", "startup_s"),
                                   ("wall s", "wall_s"),
                                   ("loadavg before", "loadavg_before"),
                                   ("loadavg after", "loadavg_after"))]
    for what, field in (("free", "answers"), ("constrained", "constrained_answers")):
        if t[field]:
            same = sum(a == b for a, b in zip(t[field], v[field]))
            rows.append([f"{what} answers identical to transformers'", "", f"{same}/{len(t[field])}"])
    print()
    print(markdown_table(["metric", "transformers", "vllm"], rows))
    for r in results.values():
        del r["answers"], r["constrained_answers"]
    print(json.dumps({"version": key, "eval_set": eval_set_ref.key, "rows": len(records), **results}))


if __name__ == "__main__":
    main()

"""The summary `finetune-pipeline demo` prints after a run."""

from __future__ import annotations

from finetune_pipeline.lib.config import PipelineConfig
from finetune_pipeline.lib.reporting.markdown import metrics_table
from finetune_pipeline.lib.storage.artifacts import ArtifactRef


def print_summary(cfg: PipelineConfig, refs: dict[str, ArtifactRef], evals: dict[str, ArtifactRef],
                  seconds: float, title: str = "finetune-pipeline demo") -> None:
    ds, adapter = refs["training_dataset"].info, refs["lora_adapter"]
    print(f"\n=== {title} ===")
    print(f"base model: {cfg.model.base_model}")
    print(f"raw rows: {ds['raw_rows']}  kept: {ds['kept']} {ds['splits']}  quarantined: {ds['quarantined']}")
    for reason, n in ds["reasons"].items():
        print(f"  quarantined {reason}: {n}")
    how = "CACHE HIT (reused, not retrained)" if adapter.cache_hit else "trained in this run"
    print(f"adapter: {how}; final train loss {adapter.info.get('final_loss')}, "
          f"eval loss {adapter.info.get('eval_loss')}, {adapter.info.get('steps')} steps, "
          f"{adapter.info.get('tokens_per_second')} tokens/s")
    print("\neval on the test split:\n")
    print(metrics_table({v: r.info["metrics"] for v, r in evals.items()}))
    print("\nartifacts:")
    for name, ref in {**refs, **{f"model_eval[{v}]": r for v, r in evals.items()}}.items():
        print(f"  {name}: {ref.path}{'  (cache hit)' if ref.cache_hit else ''}")
    print(f"\nlineage: finetune-pipeline lineage {refs['merged_model'].info['version_key']}")
    print(f"wall time: {seconds:.0f}s")

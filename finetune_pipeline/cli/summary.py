"""The summary `finetune-pipeline demo` prints after a run."""

from __future__ import annotations

from finetune_pipeline.lib.config import PipelineConfig
from finetune_pipeline.lib.reporting.markdown import fmt, markdown_table, metrics_table, with_interval
from finetune_pipeline.lib.storage.artifacts import ArtifactRef
from finetune_pipeline.lib.versions.leaderboard import Leaderboard


def print_summary(cfg: PipelineConfig, refs: dict[str, ArtifactRef], evals: dict[str, ArtifactRef],
                  seconds: float, title: str = "finetune-pipeline demo", board: ArtifactRef | None = None,
                  champion: dict | None = None) -> None:
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
    if board is None:
        print("\neval on the test split:\n")
        print(metrics_table({v: r.info["metrics"] for v, r in evals.items()}))
    else:
        print_leaderboard(Leaderboard.load(board.dir), list(evals))
    print("\nartifacts:")
    for name, ref in {**refs, **{f"model_eval[{v}]": r for v, r in evals.items()}}.items():
        print(f"  {name}: {ref.path}{'  (cache hit)' if ref.cache_hit else ''}")
    if board is not None:
        print(f"  leaderboard: {board.path}")
    if champion:
        print(f"\nchampion: {champion['version']} (finetune-pipeline serve)")
    print(f"lineage: finetune-pipeline lineage {refs['merged_model'].info['version_key']}")
    print(f"wall time: {seconds:.0f}s")


def print_leaderboard(board: Leaderboard, versions: list[str]) -> None:
    """This run's versions as the leaderboard ranks them: task and general-suite metrics with their 95%
    intervals, latency and cost; then the verdict."""
    rows = [r for r in board.rows if r.version in versions]
    task = [m for m in board.metrics if not m.startswith("general/")]
    general = [m for m in ("general/nll", "general/drift") if m in board.metrics]
    print(f"\nleaderboard (eval set {board.eval_set}, {board.eval_set_rows} rows; [95% bootstrap interval]; "
          "general/: nats per token on the general suite):\n")
    head = ["version", "kind", *task, *general, "p50 s", "tokens in", "$/1k req", "train $"]
    print(markdown_table(head, ([r.version, r.kind, *(with_interval(r.metrics.get(m), r.intervals.get(m))
                                                      for m in [*task, *general]),
                                 fmt(r.latency_p50_s, 2), fmt(r.prompt_tokens, 0), fmt(r.usd_per_1k_requests, 4),
                                 fmt(r.cost_usd, 4)] for r in rows)))
    for key in versions:
        if key in board.missing:
            print(f"  {key}: {board.missing[key]}")
    if board.verdict:
        print("\nverdict:")
        for line in board.verdict:
            print(f"  - {line}")

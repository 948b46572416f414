"""Leaderboard, champion/challenger promotion and the serving spec for the champion."""

import dagster as dg

from finetune_pipeline.defs.checks import blocking_check_keys
from finetune_pipeline.defs.logs import core_logs
from finetune_pipeline.defs.settings import PipelineSettings, artifact_output
from finetune_pipeline.defs.training import MODEL_VERSIONS
from finetune_pipeline.lib import stages
from finetune_pipeline.lib.config import PipelineConfig
from finetune_pipeline.lib.reporting.charts import confusion_file
from finetune_pipeline.lib.reporting.markdown import png_markdown as _png_md
from finetune_pipeline.lib.stages import promotion as promotion_stages
from finetune_pipeline.lib.storage.artifacts import ArtifactRef
from finetune_pipeline.lib.versions.leaderboard import Leaderboard
from finetune_pipeline.lib.versions.promotion import Checks, Guards, decide

_AFTER_UPSTREAM = (
    (dg.AutomationCondition.newly_missing() | dg.AutomationCondition.any_deps_updated()).since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("after any upstream update")


@dg.asset(
    group_name="promotion", kinds={"json"},
    # Every version's eval is read through the artifact store for the *current*
    # eval set; the edge to model_eval is for the graph and the automation.
    deps=["model_eval", "general_eval"],
    # Not eager(): a version whose eval is missing or failed must not hold the
    # leaderboard back; it is listed as missing.
    automation_condition=_AFTER_UPSTREAM,
    description="Every model version x metric on the current eval set, ranked by promotion.primary_metric, with "
                "training time, tokens, device, device-hours and estimated cost (priced by the device that "
                "trained), and the inference cost per 1,000 requests at the eval's measured latency.",
)
def leaderboard(context: dg.AssetExecutionContext, settings: PipelineSettings, eval_set: ArtifactRef,
                general_suite: ArtifactRef) -> dg.Output:
    cfg = settings.load()
    versions = context.instance.get_dynamic_partitions(MODEL_VERSIONS.name)
    with core_logs(context):
        ref = promotion_stages.leaderboard(cfg, eval_set, versions, context.run_id, general=general_suite)
    board = Leaderboard.load(ref.dir)
    for line in board.verdict:
        context.log.info(f"verdict: {line}")
    metadata = {"table": dg.MetadataValue.md(board.markdown()), "eval_set": board.eval_set,
                "suites": dg.MetadataValue.json(board.suites),
                "verdict": dg.MetadataValue.md("\n".join(f"- {line}" for line in board.verdict)),
                "primary_metric": board.primary_metric, "versions_ranked": len(board.rows),
                "versions_missing": dg.MetadataValue.json(board.missing)}
    if board.rows:
        metadata["best"] = board.rows[0].version
        metadata["metrics_chart"] = dg.MetadataValue.md(_png_md(ref.dir / "metrics.png", "metrics by version"))
    confusion = ref.info.get("confusion")
    if confusion:
        png = ref.dir / confusion_file(confusion['field'])
        metadata["confusion_matrix"] = dg.MetadataValue.md(
            f"{confusion['version']}, field `{confusion['field']}`\n\n" + _png_md(png, "confusion matrix"))
    return artifact_output(ref, **metadata)


def blocking_checks(context: dg.AssetExecutionContext, versions: list[str], cfg: PipelineConfig) -> Checks:
    """For each version: did the blocking checks of the asset that produced it pass, in the run that made it?"""
    registry, artifacts = stages.registry(cfg), stages.store(cfg)
    out: Checks = {}
    for key in versions:
        version = registry.get(key)
        lineage = version.lineage(artifacts)
        if lineage is None:
            out[key] = {}
            continue
        producer = dg.AssetKey(lineage["asset"])
        check_keys = blocking_check_keys(producer)
        if not check_keys:
            out[key] = {}
            continue
        # The runs in which the producer emitted this very artifact (cache hits re-emit it).
        runs = [r.run_id for r in context.instance.fetch_materializations(producer, limit=200).records
                if (m := r.asset_materialization) and "artifact_key" in m.metadata
                and m.metadata["artifact_key"].value == lineage["key"]]
        status: dict[str, bool | None] = {}
        for check_key in check_keys:
            history = context.instance.event_log_storage.get_asset_check_execution_history(check_key, limit=200)
            by_run = {h.run_id: h.status.value for h in history}
            latest = next((by_run[r] for r in runs if r in by_run and by_run[r] != "PLANNED"), None)
            status[check_key.name] = None if latest is None else latest == "SUCCEEDED"
        out[key] = status
    return out


@dg.asset(
    group_name="promotion", kinds={"json"}, automation_condition=_AFTER_UPSTREAM,
    description="The current champion. A challenger is promoted only if it beats the champion on the primary "
                "metric by more than promotion.margin and its blocking checks passed; every decision is kept "
                "in <artifacts_root>/promotion/history.jsonl.",
)
def champion(context: dg.AssetExecutionContext, settings: PipelineSettings, leaderboard: ArtifactRef) -> dg.Output:
    cfg = settings.load()
    board = Leaderboard.load(leaderboard.dir)
    registry, store = stages.registry(cfg), stages.promotion_store(cfg)
    current = (store.champion() or {}).get("version")
    checks = blocking_checks(context, [r.version for r in board.rows], cfg)
    p = cfg.promotion
    with core_logs(context):
        tests = promotion_stages.paired_tests(cfg, board, current) if p.confidence > 0 else {}
    decision = decide(board, current, checks, p.margin, tests,
                      Guards(confidence=p.confidence, max_forgetting=p.max_forgetting,
                             forgetting_metric=p.forgetting_metric))
    decision.run_id = context.run_id
    store.record(decision, registry.get(decision.champion) if decision.promoted else None)
    for reason in decision.reasons:
        context.log.info(reason)
    if decision.champion is None:
        raise dg.Failure("no model version could become champion: " + "; ".join(decision.reasons))
    state = store.champion()
    return dg.Output(
        state,
        # The champion's key is the data version: serving_spec is stale only when the champion moves.
        data_version=dg.DataVersion(decision.champion),
        metadata={"champion": decision.champion, "promoted": decision.promoted, "previous": str(decision.previous),
                  "primary_metric": decision.primary_metric, "margin": decision.margin,
                  "confidence": decision.confidence,
                  **({"p_value": decision.test["p_value"]} if decision.test else {}),
                  "score": state.get("score"), "eval_set": decision.eval_set,
                  "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in decision.reasons)),
                  "blocking_checks": dg.MetadataValue.json(checks),
                  "history": dg.MetadataValue.path(str(store.history_file))},
    )


@dg.asset(
    group_name="promotion", kinds={"vllm", "shell"}, automation_condition=_AFTER_UPSTREAM,
    description="The vLLM command that serves the champion (merged folder, or base + --enable-lora), with "
                "--served-model-name set to its version key, and the `transformers serve` equivalent for CPU.",
)
def serving_spec(context: dg.AssetExecutionContext, settings: PipelineSettings, champion: dict) -> dg.Output:
    with core_logs(context):
        ref, spec = promotion_stages.serving_spec(settings.load(), champion["version"], context.run_id)
    context.log.info(spec.vllm_command or spec.note)
    metadata = {"version": spec.version, "kind": spec.kind}
    for name in ("vllm_command", "transformers_serve_command"):
        if getattr(spec, name):
            metadata[name] = dg.MetadataValue.md(f"```\n{getattr(spec, name)}\n```")
    return artifact_output(ref, **metadata)

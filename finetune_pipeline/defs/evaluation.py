"""Evaluation: the eval set, and one `model_eval` partition per registered model version."""


import dagster as dg

from finetune_pipeline.defs.logs import core_logs
from finetune_pipeline.defs.settings import PipelineSettings, artifact_output
from finetune_pipeline.defs.training import MODEL_VERSIONS
from finetune_pipeline.lib import stages
from finetune_pipeline.lib.evaluation.report import EvalReport
from finetune_pipeline.lib.evaluation.significance import ConfidenceInterval
from finetune_pipeline.lib.reporting.markdown import metrics_table, png_markdown
from finetune_pipeline.lib.storage.artifacts import ArtifactRef

EVAL_SET = dg.AssetKey("eval_set")


@dg.asset(group_name="data", kinds={"jsonl"}, code_version=stages.CODE_VERSIONS["eval_set"],
          description="The test split as its own artifact; its data version is the sha256 of test.jsonl, so only "
                      "a changed test split (not a changed train split) makes the evals stale.")
def eval_set(context: dg.AssetExecutionContext, settings: PipelineSettings,
             training_dataset: ArtifactRef) -> dg.Output:
    with core_logs(context):
        ref = stages.eval_set(settings.load(), training_dataset, context.run_id)
    return artifact_output(ref, rows=ref.info["rows"], sha256=ref.info["sha256"],
                           test_file=dg.MetadataValue.path(str(ref.dir / "test.jsonl")))


# Evaluate a version when it is added, and every version when the eval set's
# *data version* changes. Plain eager() would also fire on every re-materialization
# of an input (train_and_merge re-materializes eval_set as a cache hit each run)
# and on every new merged_model (a new version must not re-evaluate the others).
_eval_set_changed = dg.AutomationCondition.any_deps_match(
    dg.AutomationCondition.data_version_changed()).allow(dg.AssetSelection.assets(EVAL_SET))
EVAL_ON_NEW_VERSION_OR_EVAL_SET = (
    (dg.AutomationCondition.newly_missing() | _eval_set_changed).since_last_handled()
    & ~dg.AutomationCondition.any_deps_missing().allow(dg.AssetSelection.assets(EVAL_SET))
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("new version or new eval set")


@dg.asset(
    group_name="evaluation", kinds={"pytorch", "json"}, partitions_def=MODEL_VERSIONS,
    code_version=stages.CODE_VERSIONS["model_eval"],
    # Lineage edges for the graph; the version's weights (or remote id) are found
    # through the registry by the partition key, never as "the latest model".
    # No edge to openai_fine_tuned_model: it yields nothing unless openai.enabled,
    # and Dagster skips the steps after a skipped one in the same run.
    deps=["base_model", "merged_model", "prompt_baselines"],
    # One run per version: each loads a different model, a broken version (or an
    # unreachable endpoint) fails alone and is retried alone, and each run's log
    # and metadata belong to one version. A single run over a range would load
    # every model in one process and could only attach one set of metadata.
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=1),
    # Local evals hold a model on the accelerator: with `dagster instance
    # concurrency set gpu 1` they queue behind training instead of competing.
    pool="gpu",
    automation_condition=EVAL_ON_NEW_VERSION_OR_EVAL_SET,
    description="Exact match, valid JSON and per-field accuracy of one model version on the eval set.",
)
def model_eval(context: dg.AssetExecutionContext, settings: PipelineSettings, eval_set: ArtifactRef) -> dg.Output:
    version = context.partition_key
    with core_logs(context):
        ref = stages.model_eval(settings.load(), version, eval_set, context.run_id)
    report = EvalReport.model_validate(ref.info)  # the artifact's info is its report.json
    charts = {}
    for png in sorted(ref.dir.glob("confusion_*.png")):  # classification evals (eval.classification.field)
        charts[png.stem] = dg.MetadataValue.md(png_markdown(png, png.stem.replace("_", " ")))
    return artifact_output(
        ref,
        **charts,
        **{name.replace("/", "_"): float(value) for name, value in report.metrics.items()},
        eval_set=report.eval_set,
        backend=report.backend["backend"],
        eval_seconds=report.eval_seconds,
        # What the leaderboard prices inference from: the device that answered and the measured latency.
        eval_device=report.device.label() if report.device else "unknown (generated behind an endpoint)",
        seconds_per_request=round(report.generation_seconds / max(int(report.metrics.get("n", 0)), 1), 4),
        **({"latency_p50_s": report.latency.p50_s, "latency_p95_s": report.latency.p95_s} if report.latency else {}),
        **({"prompt_tokens_per_request": report.tokens.prompt_per_request,
            "completion_tokens_per_request": report.tokens.completion_per_request} if report.tokens else {}),
        **({"shots": report.prompt.shots, "constraint": report.prompt.constraint or "none"} if report.prompt else {}),
        report=dg.MetadataValue.md(metrics_table({version: report.metrics}, intervals={version: report.intervals})),
        predictions=dg.MetadataValue.path(str(ref.dir / "predictions.jsonl")),
    )


GENERAL_SUITE = dg.AssetKey("general_suite")


@dg.asset(group_name="data", kinds={"jsonl"}, code_version=stages.CODE_VERSIONS["general_suite"],
          description="The general-ability suite (eval.general.suite, default data/general_eval.jsonl) as its own "
                      "artifact, keyed by its sha256: only a changed suite makes the general evals stale.")
def general_suite(context: dg.AssetExecutionContext, settings: PipelineSettings) -> dg.Output:
    with core_logs(context):
        ref = stages.general_suite(settings.load(), context.run_id)
    return artifact_output(ref, rows=ref.info["rows"], sha256=ref.info["sha256"],
                           source=dg.MetadataValue.path(ref.info["source"]))


_general_suite_changed = dg.AutomationCondition.any_deps_match(
    dg.AutomationCondition.data_version_changed()).allow(dg.AssetSelection.assets(GENERAL_SUITE))
GENERAL_ON_NEW_VERSION_OR_SUITE = (
    (dg.AutomationCondition.newly_missing() | _general_suite_changed).since_last_handled()
    & ~dg.AutomationCondition.any_deps_missing().allow(dg.AssetSelection.assets(GENERAL_SUITE))
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("new version or new general suite")


# One asset per suite rather than a version x suite multi-partition: each suite has its own input (the test
# split, the general suite), its own kind of work (generation and scoring, likelihoods) and its own staleness,
# and the version stays the only partition key, as the CLI, sensors and backfills already use it. Backfilling
# one suite across all versions is selecting its asset and every partition.
@dg.asset(
    group_name="evaluation", kinds={"pytorch", "json"}, partitions_def=MODEL_VERSIONS,
    code_version=stages.CODE_VERSIONS["general_eval"],
    deps=["base_model", "merged_model", "prompt_baselines"],
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=1),
    pool="gpu",
    automation_condition=GENERAL_ON_NEW_VERSION_OR_SUITE,
    description="Forgetting: one model version's likelihood of the general suite's references and of the base "
                "model's own answers (general/nll, general/base_answer_nll), and their change from its base model "
                "(general/nll_delta, general/drift), with 95% bootstrap intervals.",
)
def general_eval(context: dg.AssetExecutionContext, settings: PipelineSettings, general_suite: ArtifactRef
                 ) -> dg.Output:
    version = context.partition_key
    with core_logs(context):
        ref = stages.general_eval(settings.load(), version, general_suite, context.run_id)
    info = ref.info
    metrics = info.get("metrics", {})
    intervals = {k: ConfidenceInterval.model_validate(v) for k, v in info.get("intervals", {}).items()}
    return artifact_output(
        ref, **{name.replace("/", "_"): float(value) for name, value in metrics.items()},
        weights_of=info["weights_of"], base_version=str(info.get("base_version")),
        report=dg.MetadataValue.md(metrics_table({version: metrics}, intervals={version: intervals}) if metrics
                                   else info.get("note", "")))


evaluate_new_versions = dg.AutomationConditionSensorDefinition(
    "evaluate_new_versions",
    target=dg.AssetSelection.groups("evaluation", "promotion"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Evaluates each new model version and re-evaluates all when the eval set changes; then updates "
                "leaderboard, champion and serving_spec.",
)

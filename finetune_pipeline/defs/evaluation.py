"""Evaluation: one `model_eval` partition per registered model version."""


import dagster as dg

from finetune_pipeline.defs.settings import PipelineSettings, artifact_output, log_to
from finetune_pipeline.defs.training import MODEL_VERSIONS
from finetune_pipeline.lib import stages
from finetune_pipeline.lib.artifacts import ArtifactRef
from finetune_pipeline.lib.metrics import markdown_table


@dg.asset(
    group_name="evaluation", kinds={"pytorch", "json"}, partitions_def=MODEL_VERSIONS,
    code_version=stages.CODE_VERSIONS["model_eval"],
    # Lineage edges for the graph; the version's weights are found through the
    # registry by the partition key, never as "the latest model".
    deps=["base_model", "merged_model"],
    # New versions get evaluated, and all versions are re-evaluated when the
    # test split changes, by the automation sensor below.
    automation_condition=dg.AutomationCondition.eager(),
    description="Exact match, valid JSON and per-field accuracy of one model version on the test split.",
)
def model_eval(context: dg.AssetExecutionContext, settings: PipelineSettings,
               training_dataset: ArtifactRef) -> dg.Output:
    version = context.partition_key
    ref = stages.model_eval(settings.load(), version, training_dataset, context.run_id, log_to(context))
    metrics = ref.info["metrics"]
    return artifact_output(
        ref,
        **{name.replace("/", "_"): float(value) for name, value in metrics.items()},
        report=dg.MetadataValue.md(markdown_table({version: metrics})),
        predictions=dg.MetadataValue.path(str(ref.dir / "predictions.jsonl")),
    )


evaluate_new_versions = dg.AutomationConditionSensorDefinition(
    "evaluate_new_versions",
    target=dg.AssetSelection.assets(model_eval),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
)

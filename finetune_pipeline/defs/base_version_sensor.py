"""Registers the configured base model as a model version before anything runs.

On a fresh instance `model_versions` is empty until `base_model` or
`merged_model` materializes, and the web UI's "Materialize all" dialog then
has no `model_eval` partition to pick, so its launch button stays disabled.
The base version's key depends only on the config (`base-<model name>`), so
this sensor adds it up front: "Materialize all" -> "All" launches one run that
builds the graph and evaluates the baseline, and `evaluate_new_versions`
evaluates the fine-tuned version the run registers.
"""


import dagster as dg

from finetune_pipeline.defs.settings import PipelineSettings
from finetune_pipeline.defs.training import MODEL_VERSIONS
from finetune_pipeline.lib.models.base_models import spec_slug
from finetune_pipeline.lib.versions.version import base_key


@dg.sensor(
    default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=30,
    description="Adds the configured base model's version (base-<name>) to model_versions, so model_eval has a "
                "partition to launch before the first run.",
)
def register_base_version(context: dg.SensorEvaluationContext, settings: PipelineSettings):
    key = base_key(spec_slug(settings.load().model.base_model))
    if context.instance.has_dynamic_partition(MODEL_VERSIONS.name, key):
        return dg.SkipReason(f"{key} is already a model version")
    context.log.info(f"registering model version {key}")
    return dg.SensorResult(dynamic_partitions_requests=[MODEL_VERSIONS.build_add_request([key])])

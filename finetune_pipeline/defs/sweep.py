"""Recipe sweeps in Dagster: one partition per sweep point, then the winner.

Design: the points are partitions of a dynamic partition set `sweep_points`,
not runs of lora_adapter with config overrides. A partition per point gives each
point its own materializations, logs, retries and lineage in the UI (the asset's
partition table is the sweep's table), a backfill trains them one run per point
in the `gpu` pool, and lora_adapter stays the one main-line adapter that the
schedule and the sensors retrain. Runs of lora_adapter with overrides would all
be materializations of one unpartitioned asset, each overwriting the last as its
"current" value. The partitions are dynamic, not static from the config, so a
config picked in the launchpad or a grown sweep needs no code reload: the sensor
`register_sweep_points` (and `finetune-pipeline sweep`) adds the config's point
names. Each partition trains through the same stages (lora_adapter, merged_model)
with the point's train section, so keys, cache hits and lineage are the main
adapter's.

Only the winner's version joins `model_versions` (evaluated on the test split by
`evaluate_new_versions`); the others are registered model versions that a run of
`evaluate_version` evaluates on demand once added there (sweep.evaluate_on_test: all
adds them all).
"""


import dagster as dg

from finetune_pipeline.defs.logs import core_logs
from finetune_pipeline.defs.settings import PipelineSettings, artifact_output
from finetune_pipeline.defs.training import MODEL_VERSIONS, pipes_launcher, training_metadata
from finetune_pipeline.lib import stages
from finetune_pipeline.lib.reporting.markdown import markdown_table
from finetune_pipeline.lib.stages import sweep as sweep_stages
from finetune_pipeline.lib.storage.artifacts import ArtifactRef

SWEEP_POINTS = dg.DynamicPartitionsDefinition(name="sweep_points")
ONE_POINT_PER_RUN = dg.BackfillPolicy.multi_run(max_partitions_per_run=1)  # each point its own run, log and retry


@dg.asset(group_name="sweep", kinds={"pytorch", "peft"}, partitions_def=SWEEP_POINTS, pool="gpu",
          code_version=stages.CODE_VERSIONS["lora_adapter"], backfill_policy=ONE_POINT_PER_RUN,
          retry_policy=dg.RetryPolicy(max_retries=2, delay=5),
          description="One sweep point's adapter: lora_adapter's training with the point's train settings, through "
                      "Dagster Pipes in pool gpu; a point trained before (same settings) is a cache hit.")
def sweep_adapter(context: dg.AssetExecutionContext, settings: PipelineSettings,
                  pipes_subprocess_client: dg.PipesSubprocessClient, base_model: ArtifactRef,
                  training_dataset: ArtifactRef) -> dg.Output:
    launch = pipes_launcher(context, pipes_subprocess_client)
    cfg = settings.load()
    with core_logs(context):
        ref = sweep_stages.sweep_adapter(cfg, context.partition_key, base_model, training_dataset, launch,
                                         context.run_id)
    point, _ = sweep_stages.point_config(cfg, context.partition_key)
    return artifact_output(ref, point=point.name, settings=dg.MetadataValue.json(point.overrides),
                           **training_metadata(ref.info))


@dg.asset(group_name="sweep", kinds={"peft", "safetensors"}, partitions_def=SWEEP_POINTS, pool="gpu",
          code_version=stages.CODE_VERSIONS["sweep_point"], backfill_policy=ONE_POINT_PER_RUN,
          description="One sweep point's model version (base + its adapter merged) and its validation record: the "
                      "adapter's best eval loss and, with select_by val/<metric>, an eval on the val split.")
def sweep_model(context: dg.AssetExecutionContext, settings: PipelineSettings, base_model: ArtifactRef,
                training_dataset: ArtifactRef, sweep_adapter: ArtifactRef) -> dg.Output:
    with core_logs(context):
        ref = sweep_stages.sweep_model(settings.load(), context.partition_key, base_model, training_dataset,
                                       sweep_adapter, context.run_id)
    validation = {k: float(v) for k, v in ref.info["validation"].items() if v is not None}
    return artifact_output(ref, version_key=ref.info["version"], adapter=ref.info["adapter"],
                           **{k.replace("/", "_"): v for k, v in validation.items()})


@dg.asset(group_name="sweep", kinds={"json"}, code_version=stages.CODE_VERSIONS["sweep_winner"], deps=[sweep_model],
          description="The sweep's winner by sweep.select_by on the val split (never the test split), from the "
                      "points' validation records; adds the winner's model version (or every point's, with "
                      "sweep.evaluate_on_test: all) to model_versions, so it is evaluated on the test split.")
def sweep_winner(context: dg.AssetExecutionContext, settings: PipelineSettings, base_model: ArtifactRef,
                 training_dataset: ArtifactRef) -> dg.Output:
    with core_logs(context):
        ref = sweep_stages.sweep_winner(settings.load(), base_model, training_dataset, context.run_id)
    selection = sweep_stages.load_selection(ref)
    context.instance.add_dynamic_partitions(MODEL_VERSIONS.name, ref.info["evaluate_on_test"])
    table = markdown_table(
        ["point", "version", selection.select_by, "train s"],
        [[p.name + (" (winner)" if p.name == selection.winner else ""), p.version,
          p.validation.get(selection.select_by), p.train_seconds]
         for p in sorted(selection.points, key=lambda p: selection.ranking.index(p.name))])
    return artifact_output(ref, winner=selection.winner, version_key=selection.winner_version,
                           select_by=f"{selection.select_by} on the val split",
                           evaluate_on_test=dg.MetadataValue.json(ref.info["evaluate_on_test"]),
                           points=dg.MetadataValue.md(table))


@dg.sensor(default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=30,
           description="Adds the config's sweep points to sweep_points, so the UI can launch sweep_adapter and "
                       "sweep_model for them (select the sweep group, Materialize, all partitions).")
def register_sweep_points(context: dg.SensorEvaluationContext, settings: PipelineSettings):
    names = [p.name for p in settings.load().sweep_points()]
    new = [n for n in names if not context.instance.has_dynamic_partition(SWEEP_POINTS.name, n)]
    if not new:
        return dg.SkipReason("no sweep: section" if not names else "every sweep point is registered")
    context.log.info(f"registering sweep points {new}")
    return dg.SensorResult(dynamic_partitions_requests=[SWEEP_POINTS.build_add_request(new)])


sweep_point_job = dg.define_asset_job(
    "sweep_point", selection=dg.AssetSelection.assets(sweep_adapter, sweep_model), partitions_def=SWEEP_POINTS,
    description="Train and validate one sweep point (a partition of sweep_points): its adapter, model version and "
                "validation record.")
sweep_select_job = dg.define_asset_job(
    "sweep_select", selection=dg.AssetSelection.assets(sweep_winner),
    description="Choose the sweep's winner on the val split and add it to model_versions (test-split evaluation).")
sweep_inputs_job = dg.define_asset_job(
    "sweep_inputs", selection=dg.AssetSelection.assets("raw_examples", "training_dataset", "base_model", "eval_set",
                                                       "general_suite"),
    description="What every sweep point trains on (the raw files, the dataset with its blocking checks, the base "
                "model) and what the winner is evaluated on (eval set, general suite), without training the main "
                "adapter.")

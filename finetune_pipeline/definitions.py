"""The Dagster code location: builds Definitions from `defs/`, nothing else."""

import dagster as dg

from finetune_pipeline.defs import (
    data,
    evaluation,
    openai_training,
    promotion,
    schedules,
    sweep,
    training,
)
from finetune_pipeline.defs.base_version_sensor import register_base_version
from finetune_pipeline.defs.checks import ASSET_CHECKS
from finetune_pipeline.defs.refs_io import ArtifactRefsOnObjectStorage
from finetune_pipeline.defs.settings import PipelineSettings
from finetune_pipeline.lib.config import PipelineConfig

train_and_merge = dg.define_asset_job(
    "train_and_merge",
    selection=dg.AssetSelection.groups("data", "training"),
    description="Raw files -> dataset -> adapter -> merged model; registers the new model version.",
)
evaluate_version = dg.define_asset_job(
    "evaluate_version",
    selection=dg.AssetSelection.assets(evaluation.model_eval, evaluation.general_eval),
    partitions_def=training.MODEL_VERSIONS,
    description="Evaluate one model version (a partition) on every suite: the current test split (model_eval) and "
                "the general suite (general_eval).",
)
promote = dg.define_asset_job(
    "promote",
    selection=dg.AssetSelection.groups("promotion"),
    description="Leaderboard from the evals on the current eval set, champion/challenger gate, serving spec.",
)


def build_definitions(cfg: PipelineConfig) -> dg.Definitions:
    """Definitions for one config: its schedules, and where run outputs (ArtifactRefs) are kept."""
    # Cron and time zone come from the config's `schedule` section.
    nightly_retrain, raw_files_changed = schedules.build(cfg)
    # Its own schedule, stopped unless openai.enabled: never part of the nightly retrain by default.
    nightly_openai_fine_tune = schedules.build_openai(cfg)
    # With artifacts on object storage, outputs go next to them, where every pod reads them;
    # otherwise Dagster's default IO manager keeps them in the instance's storage folder.
    io = ({"io_manager": ArtifactRefsOnObjectStorage(url=cfg.artifacts_url,
                                                     storage_options=cfg.artifacts_storage_options)}
          if cfg.artifacts_url else {})
    # The sweep's assets exist only for a config with a sweep: section. Their partitions (sweep_points) differ
    # from model_eval's, and the UI's "Materialize all" cannot launch assets of two partitionings together:
    # a config without a sweep keeps the one-click graph.
    swept = bool(cfg.sweep_points())
    return dg.Definitions(
        assets=[data.raw_examples, data.training_dataset, training.base_model, training.lora_adapter,
                training.merged_model, training.prompt_baselines, evaluation.model_eval, evaluation.general_eval,
                openai_training.openai_fine_tuned_model, evaluation.eval_set, evaluation.general_suite,
                promotion.leaderboard, promotion.champion, promotion.serving_spec,
                *([sweep.sweep_adapter, sweep.sweep_model, sweep.sweep_winner] if swept else [])],
        asset_checks=ASSET_CHECKS,
        jobs=[train_and_merge, evaluate_version, openai_training.openai_fine_tune, promote,
              *([sweep.sweep_inputs_job, sweep.sweep_point_job, sweep.sweep_select_job] if swept else [])],
        schedules=[nightly_retrain, nightly_openai_fine_tune],
        sensors=[evaluation.evaluate_new_versions, register_base_version, raw_files_changed,
                 *([sweep.register_sweep_points] if swept else [])],
        # One process per run, not per step: every step imports torch and transformers (seconds each) and
        # the graph is a chain, so per-step processes only add minutes. Training is isolated in its Pipes
        # child; pools (`gpu`) still apply. The `demo` command runs in process too.
        executor=dg.in_process_executor,
        resources={"settings": PipelineSettings(), "pipes_subprocess_client": dg.PipesSubprocessClient(),
                   "openai_client": openai_training.OpenAIClientResource(), **io},
    )


# The code location: the config named by FINETUNE_PIPELINE_CONFIG (or configs/demo.yaml).
defs = build_definitions(PipelineSettings().load())

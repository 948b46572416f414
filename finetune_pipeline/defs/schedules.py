"""Nightly retraining: a schedule, and a sensor on the raw folder (off by default).

Both request `train_and_merge` (raw files -> dataset + eval set -> adapter ->
merged model, which registers the new version) only when the raw files or the
config changed since the last fine-tuned version; otherwise they skip and say
so. The new version's eval, the leaderboard, the champion and the serving spec
follow through the `evaluate_new_versions` automation sensor.
"""

import dagster as dg

from finetune_pipeline.defs.settings import PipelineSettings
from finetune_pipeline.lib.config import PipelineConfig
from finetune_pipeline.lib.stages.promotion import retrain_check
from finetune_pipeline.lib.versions.retraining import RetrainCheck

TRAIN_JOB = "train_and_merge"


def _request(check: RetrainCheck, run_key: str | None) -> dg.RunRequest | dg.SkipReason:
    if not check.needed:
        return dg.SkipReason(check.reason)
    return dg.RunRequest(run_key=run_key, tags={"finetune/retrain_reason": check.reason[:200],
                                                "finetune/inputs": check.fingerprint})


def build(cfg: PipelineConfig) -> tuple[dg.ScheduleDefinition, dg.SensorDefinition]:
    """The schedule and the sensor, timed by the config's `schedule` section."""
    s = cfg.schedule

    @dg.schedule(
        name="nightly_retrain", job_name=TRAIN_JOB, cron_schedule=s.cron, execution_timezone=s.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING if s.enabled else dg.DefaultScheduleStatus.STOPPED,
        description=f"Retrains at '{s.cron}' ({s.timezone}) when raw data or config changed since the last version.",
    )
    def nightly_retrain(context: dg.ScheduleEvaluationContext, settings: PipelineSettings):
        return _request(retrain_check(settings.load()), None)

    @dg.sensor(
        name="raw_files_changed", job_name=TRAIN_JOB, minimum_interval_seconds=s.sensor_interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING if s.raw_files_sensor else dg.DefaultSensorStatus.STOPPED,
        description="Requests a retrain when files under data.raw_dir change (schedule.raw_files_sensor).",
    )
    def raw_files_changed(context: dg.SensorEvaluationContext, settings: PipelineSettings):
        check = retrain_check(settings.load())
        # The run key is the fingerprint of files + config: one run per distinct state.
        return _request(check, f"retrain-{check.fingerprint}")

    return nightly_retrain, raw_files_changed


OPENAI_JOB = "openai_fine_tune"


def build_openai(cfg: PipelineConfig) -> dg.ScheduleDefinition:
    """The nightly OpenAI fine-tune: stopped unless openai.enabled (it costs money).

    Same cron as nightly_retrain. Uploads and jobs are keyed by content hash, so a
    night with unchanged data reuses the existing job instead of paying again; and
    the asset itself re-checks openai.enabled when it runs.
    """
    s, on = cfg.schedule, cfg.openai.enabled and cfg.schedule.enabled

    @dg.schedule(
        name="nightly_openai_fine_tune", job_name=OPENAI_JOB, cron_schedule=s.cron, execution_timezone=s.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING if on else dg.DefaultScheduleStatus.STOPPED,
        description="OpenAI fine-tuning at the nightly time; runs only with openai.enabled: true in the config.",
    )
    def nightly_openai_fine_tune(context: dg.ScheduleEvaluationContext, settings: PipelineSettings):
        if not settings.load().openai.enabled:
            return dg.SkipReason("openai.enabled is false in the config: OpenAI fine-tuning costs money, so it "
                                 "runs only when the config turns it on")
        return dg.RunRequest()

    return nightly_openai_fine_tune

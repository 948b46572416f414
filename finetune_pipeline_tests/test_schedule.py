"""Nightly retraining: the schedule skips (saying why) on unchanged raw data and config, and
requests a run when either changed; its cron and time zone come from the config."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from finetune_pipeline.definitions import defs
from finetune_pipeline.defs import schedules
from finetune_pipeline.defs.settings import PipelineSettings
from finetune_pipeline.lib.config import ConfigError, load_config
from finetune_pipeline_tests.helpers import seed_row, write_config, write_jsonl
from finetune_pipeline_tests.model_versions import TRAIN_B

TICK = dt.datetime(2026, 6, 1, 2, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def _tick(schedule, instance, config_path):
    context = dg.build_schedule_context(instance=instance, scheduled_execution_time=TICK,
                                        resources={"settings": PipelineSettings(config_path=str(config_path))})
    return schedule(context)


@pytest.mark.slow
def test_schedule_skips_on_unchanged_data_and_runs_on_changed_data(three_versions, instance):
    versions = three_versions
    nightly, _ = schedules.build(versions.cfg("b"))
    # Config B made the newest version; nothing changed since.
    result = _tick(nightly, instance, versions.config_b)
    assert isinstance(result, dg.SkipReason)
    assert f"unchanged since model version {versions.lora_b}" in result.skip_message
    assert "raw data (1 file(s), same sha256)" in result.skip_message

    extra = versions.raw_dir / "new_tickets.jsonl"
    write_jsonl(extra, [seed_row(f"Please cancel my subscription number {i} today") for i in range(12)])
    try:
        result = _tick(nightly, instance, versions.config_b)
        assert isinstance(result, dg.RunRequest)
        assert result.tags["finetune/retrain_reason"] == (
            f"changed since model version {versions.lora_b}: raw file added: new_tickets.jsonl")
    finally:
        extra.unlink()
    # The same file back as it was: unchanged again.
    assert isinstance(_tick(nightly, instance, versions.config_b), dg.SkipReason)


@pytest.mark.slow
def test_schedule_runs_on_changed_training_config(three_versions, instance, tmp_path):
    versions = three_versions
    changed = write_config(tmp_path, versions.raw_dir, artifacts_root=str(versions.artifacts),
                           train={**TRAIN_B, "lora": {"r": 16, "alpha": 16}})
    nightly, _ = schedules.build(load_config(changed))
    result = _tick(nightly, instance, changed)
    assert isinstance(result, dg.RunRequest)
    assert "train.lora.r: 8 -> 16" in result.tags["finetune/retrain_reason"]


def test_schedule_requests_the_first_training(tmp_path, instance):
    from finetune_pipeline_tests.helpers import SAMPLE_RAW

    path = write_config(tmp_path, SAMPLE_RAW)
    nightly, _ = schedules.build(load_config(path))
    result = _tick(nightly, instance, path)
    assert isinstance(result, dg.RunRequest)
    assert result.tags["finetune/retrain_reason"] == "no fine-tuned model version yet"


def test_schedule_defaults_to_0200_utc_and_follows_the_config(tmp_path):
    [shipped] = [s for s in defs.schedules if s.name == "nightly_retrain"]
    assert (shipped.cron_schedule, shipped.execution_timezone, shipped.job_name) == ("0 2 * * *", "UTC",
                                                                                     "train_and_merge")
    assert shipped.default_status == dg.DefaultScheduleStatus.RUNNING
    [sensor] = [s for s in defs.sensors if s.name == "raw_files_changed"]
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED  # the raw-folder sensor is opt-in

    path = write_config(tmp_path, tmp_path, schedule={"cron": "30 3 * * 1-5", "timezone": "Europe/Berlin",
                                                      "raw_files_sensor": True})
    nightly, raw_sensor = schedules.build(load_config(path))
    assert (nightly.cron_schedule, nightly.execution_timezone) == ("30 3 * * 1-5", "Europe/Berlin")
    assert raw_sensor.default_status == dg.DefaultSensorStatus.RUNNING


@pytest.mark.parametrize("schedule, message", [
    ({"timezone": "Mars/Olympus"}, "schedule.timezone 'Mars/Olympus' is not an IANA time zone"),
    ({"cron": "every night"}, "schedule.cron must have 5 fields"),
])
def test_bad_schedule_config_is_named(tmp_path, schedule, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write_config(tmp_path, tmp_path, schedule=schedule))


@pytest.mark.slow
def test_raw_files_sensor_requests_one_run_per_new_state(three_versions, instance):
    versions = three_versions
    _, sensor = schedules.build(versions.cfg("b"))
    context = lambda: dg.build_sensor_context(  # noqa: E731
        instance=instance, resources={"settings": PipelineSettings(config_path=str(versions.config_b))})
    assert isinstance(sensor(context()), dg.SkipReason)
    extra = versions.raw_dir / "late_upload.jsonl"
    write_jsonl(extra, [seed_row("The app crashes every time I open my invoices page")])
    try:
        first, second = sensor(context()), sensor(context())
    finally:
        extra.unlink()
    assert isinstance(first, dg.RunRequest) and first.run_key.startswith("retrain-")
    # Same files, same key: Dagster launches a run key once.
    assert second.run_key == first.run_key


def test_openai_fine_tuning_is_not_nightly_unless_the_config_turns_it_on(tmp_path, instance):
    # Shipped (openai.enabled false): its own schedule, stopped, and the nightly retrain never selects it.
    [shipped] = [s for s in defs.schedules if s.name == "nightly_openai_fine_tune"]
    assert shipped.default_status == dg.DefaultScheduleStatus.STOPPED and shipped.job_name == "openai_fine_tune"
    retrain_job = defs.resolve_job_def("train_and_merge")
    assert dg.AssetKey("openai_fine_tuned_model") not in retrain_job.asset_layer.selected_asset_keys
    off = write_config(tmp_path, tmp_path)
    assert isinstance(_tick(shipped, instance, off), dg.SkipReason)  # even if someone starts it

    on = tmp_path / "on"
    on.mkdir()
    on_path = write_config(on, tmp_path, openai={"enabled": True})
    enabled = schedules.build_openai(load_config(on_path))
    assert enabled.default_status == dg.DefaultScheduleStatus.RUNNING
    assert enabled.cron_schedule == "0 2 * * *"
    request = _tick(enabled, instance, on_path)
    assert isinstance(request, dg.RunRequest)

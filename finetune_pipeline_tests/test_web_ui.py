"""The web UI end to end in a real browser: `dagster dev` on loopback, headless Chromium via Playwright.

A user opens the asset graph, clicks "Materialize all", picks all model-version
partitions (the base version is already registered by `register_base_version`),
launches, watches the run succeed, and opens `model_eval` to see one partition
per model version: the baseline evaluated in the run, the fine-tuned version
evaluated by the `evaluate_new_versions` automation sensor afterwards.
Screenshots go to the test's tmp folder (`screenshots/`).
"""

from __future__ import annotations

import os
import re
import sys
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from finetune_pipeline.defs.base_version_sensor import register_base_version
from finetune_pipeline.defs.settings import PipelineSettings
from finetune_pipeline.lib import PROJECT_ROOT
from finetune_pipeline_tests.helpers import SAMPLE_RAW, write_config
from finetune_pipeline_tests.local_servers import (
    free_port,
    start_group,
    stop_group,
    wait_until,
)

CHROMIUM = "/usr/bin/chromium"
# A closed network otherwise fills the log with refused connections; a fresh profile keeps runs independent.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                    reason="needs Debian chromium at /usr/bin/chromium (scripts/setup.sh dev installs it)")


def test_register_base_version_adds_the_configured_base_once(tmp_path):
    config = write_config(tmp_path, SAMPLE_RAW, model={"base_model": "embedded:smollm2-135m-instruct"})
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance,
                                          resources={"settings": PipelineSettings(config_path=str(config))})
        first = register_base_version.evaluate_tick(context)
        assert [r.partition_keys for r in first.dynamic_partitions_requests] == [["base-smollm2-135m-instruct"]]
        instance.add_dynamic_partitions("model_versions", ["base-smollm2-135m-instruct"])
        second = register_base_version.evaluate_tick(context)
        assert not second.dynamic_partitions_requests
        assert "already a model version" in second.skip_message


@pytest.fixture
def dagster_dev(tmp_path):
    """`dagster dev` (webserver + daemon) on a free loopback port, with its own instance and a tiny-model config."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    config = write_config(tmp_path, SAMPLE_RAW)
    port = free_port()
    log = tmp_path / "dagster_dev.log"
    env = {**os.environ, "DAGSTER_HOME": str(home), "FINETUNE_PIPELINE_CONFIG": str(config)}
    proc = start_group([str(Path(sys.executable).with_name("dagster")), "dev", "-w", "workspace.yaml",
                        "-h", "127.0.0.1", "-p", str(port)], log, cwd=PROJECT_ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: proc.poll() is not None or _responds(url + "/server_info"), 120, "dagster dev", log=log)
        assert proc.poll() is None, log.read_text()[-3000:]
        with dg.DagsterInstance.from_config(str(home)) as instance:
            yield url, instance, log
    finally:
        stop_group(proc)


def _responds(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


@needs_chromium
@pytest.mark.timeout(600)
@pytest.mark.slow
def test_materialize_all_in_the_browser_then_see_version_partitions(dagster_dev, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, instance, log = dagster_dev
    shots = tmp_path / "screenshots"
    shots.mkdir()
    # The daemon's first sensor tick registers the base version; until then the dialog has no partition.
    wait_until(lambda: instance.has_dynamic_partition("model_versions", "base-tiny-random"), 90,
               "register_base_version to add base-tiny-random", log=log)

    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium_profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 760})
        try:
            page = browser.new_page()
            page.set_default_timeout(60_000)
            page.goto(url + "/asset-groups")
            # A fresh instance greets its first visitor with a newsletter dialog.
            page.get_by_role("button", name="Skip").click()
            materialize = page.get_by_role("button", name="Materialize all…")
            expect(materialize).to_be_enabled(timeout=60_000)
            page.screenshot(path=shots / "01-asset-graph.png")

            # "Materialize all": the graph mixes unpartitioned assets with model_eval (one partition per
            # model version), so the dialog asks which versions; "All" makes it a single run.
            materialize.click()
            dialog = page.get_by_role("dialog")
            expect(dialog).to_contain_text("Launch runs to materialize")
            dialog.get_by_role("button", name="All", exact=True).click()
            expect(dialog).to_contain_text("base-tiny-random")
            page.screenshot(path=shots / "02-launch-dialog.png")
            dialog.get_by_role("button", name="Launch 1 run").click()
            page.get_by_text("View", exact=True).click()  # on the "Launched run" toast
            expect(page).to_have_url(re.compile(r"/runs/[0-9a-f-]{36}$"), timeout=30_000)
            run_id = page.url.rsplit("/", 1)[-1]

            run = wait_until(lambda: _finished(instance, run_id), 300, f"run {run_id} to finish", log=log)
            assert run.status == dg.DagsterRunStatus.SUCCESS, _failures(instance, run_id)
            expect(page.get_by_text("Success", exact=True).first).to_be_visible(timeout=30_000)
            page.screenshot(path=shots / "03-run-succeeded.png")

            # The run registered the fine-tuned version; evaluate_new_versions (a sensor of
            # `dagster dev`'s daemon) launches its evaluation.
            versions = set(instance.get_dynamic_partitions("model_versions"))
            assert "base-tiny-random" in versions and any(v.startswith("lora-") for v in versions), versions
            wait_until(lambda: _evaluated(instance) >= versions, 240, f"model_eval of {sorted(versions)}", log=log,
                       interval_s=2)
            page.goto(url + "/assets/model_eval?view=partitions")
            for version in versions:
                expect(page.get_by_text(version, exact=True).first).to_be_visible()
            expect(page.get_by_text(f"Materialized ({len(versions)})")).to_be_visible()
            page.screenshot(path=shots / "04-model-eval-partitions.png")

            page.goto(url + "/asset-groups")
            expect(materialize).to_be_enabled()
            page.mouse.click(900, 650, button="right")  # the graph's context menu
            page.get_by_role("menuitem", name=re.compile("Expand all groups")).click()
            expect(page.get_by_text("lora_adapter", exact=True).first).to_be_visible()
            page.wait_for_timeout(2000)  # the graph animates into place
            page.screenshot(path=shots / "05-asset-graph-materialized.png")

            # The training's loss curve: a PNG in the adapter's markdown metadata, rendered by the UI.
            page.goto(url + "/assets/lora_adapter")
            page.get_by_text("Show Markdown").first.click()
            curve = page.get_by_role("dialog").get_by_role("img", name="loss curve")
            expect(curve).to_be_visible(timeout=30_000)
            # Decoded by the browser, not a broken-image placeholder.
            assert curve.evaluate("img => img.complete && img.naturalWidth > 100 && img.naturalHeight > 100")
            page.screenshot(path=shots / "06-loss-curve.png")
        finally:
            browser.close()
    # The picture the browser decoded is the training's own loss curve, from the adapter's metadata.
    curve_md = instance.get_latest_materialization_event(dg.AssetKey("lora_adapter")).asset_materialization.metadata
    assert curve_md["loss_curve"].value.startswith("![loss curve](data:image/png;base64,iVBORw0KGgo")


def _finished(instance: dg.DagsterInstance, run_id: str):
    run = instance.get_run_by_id(run_id)
    return run if run is not None and run.is_finished else None


def _evaluated(instance: dg.DagsterInstance) -> set[str]:
    failed = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
    assert not failed, _failures(instance, failed[0].run_id)
    return set(instance.get_materialized_partitions(dg.AssetKey("model_eval")))


def _failures(instance: dg.DagsterInstance, run_id: str) -> str:
    """What went wrong in a run, as the UI's event log would show it."""
    lines = []
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is not None and event.event_type_value in ("STEP_FAILURE", "RUN_FAILURE"):
            error = getattr(event.event_specific_data, "error", None)
            lines.append(f"{event.step_key or 'run'}: {error.to_string() if error else record.user_message}")
    return f"run {run_id} failed:\n" + "\n".join(lines)

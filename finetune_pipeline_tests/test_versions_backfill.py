"""Model versions in a real Dagster instance: a real backfill of model_eval, the leaderboard,
promotion and the serving spec; a changed test split makes every eval stale.

The backfill is launched by `finetune-pipeline backfill-evals` through a real
`dagster-webserver` (its GraphQL mutation launchPartitionBackfill, the call the
UI's Materialize button makes), which records it in the test instance, and is
executed in process by Dagster's own backfill daemon iteration, with runs
launched synchronously in this process.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import urllib.request
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.data_version import StaleStatus
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.test_utils import create_test_daemon_workspace_context
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.backfill import execute_backfill_iteration
from dagster._utils.test.data_versions import get_stale_status_resolver

from finetune_pipeline import cli
from finetune_pipeline.definitions import defs
from finetune_pipeline.defs.settings import PipelineSettings
from finetune_pipeline.lib import PROJECT_ROOT
from finetune_pipeline.lib.models.device import describe_device
from finetune_pipeline.lib.versions.promotion import PromotionStore
from finetune_pipeline_tests.helpers import (
    TRAIN_AND_MERGE,
    latest_materialization,
    materialized,
    seed_row,
    write_jsonl,
)
from finetune_pipeline_tests.local_servers import free_port, start_group, stop_group, wait_until

# The three_versions fixture (two trainings), a real webserver and backfills.
pytestmark = pytest.mark.slow

# Runs submitted by the backfill start at once and execute synchronously in this process.
SYNC_LAUNCHER = {"run_launcher": {"module": "dagster._core.launcher.sync_in_memory_run_launcher",
                                  "class": "SyncInMemoryRunLauncher"},
                 "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "DefaultRunCoordinator"}}
PARTITION_TAG = "dagster/asset_partition_range_start"
PROMOTION = ["leaderboard", "champion", "serving_spec"]


@pytest.fixture(scope="module")
def evaluated(three_versions, tmp_path_factory):
    """A real instance where both trainings registered their versions and one backfill evaluated all three.

    Yields (instance, registered versions, the backfill as requested, URL of the webserver serving the instance).
    """
    home = tmp_path_factory.mktemp("dagster_home")
    log = tmp_path_factory.mktemp("webserver") / "dagster-webserver.log"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(home))
        mp.setenv("FINETUNE_PIPELINE_CONFIG", str(three_versions.config_a))
        # instance_for_test writes home/dagster.yaml (SQLite storage in home), which the webserver reads.
        with dg.instance_for_test(temp_dir=str(home), overrides=SYNC_LAUNCHER) as instance, \
                _webserver(home, three_versions.config_a, log) as (proc, url):
            job = defs.resolve_job_def("train_and_merge")
            for config in (three_versions.config_a, three_versions.config_b):
                # Cache hits: this registers the versions and runs the blocking checks, no training.
                mp.setenv("FINETUNE_PIPELINE_CONFIG", str(config))
                assert materialized(job.execute_in_process(instance=instance)) == TRAIN_AND_MERGE
            mp.setenv("FINETUNE_PIPELINE_CONFIG", str(three_versions.config_a))
            registered = sorted(instance.get_dynamic_partitions("model_versions"))
            # The webserver started above, while the versions were registered; now it must serve model_eval.
            wait_until(lambda: proc.poll() is not None or _serves_model_eval(url), 180, "dagster-webserver",
                       log=log)
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            # The CLI launches a real asset backfill through the webserver, as the UI does.
            assert cli.main(["backfill-evals", "--url", url]) == 0
            [requested] = instance.get_backfills()
            _run_backfills(instance)
            yield instance, registered, requested, url


@contextmanager
def _webserver(home: Path, config: Path, log: Path):
    """A real `dagster-webserver` on a free loopback port serving this project, on the instance in `home`.

    Started here and waited for by the caller (it loads the code location while the test does other work).
    """
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "FINETUNE_PIPELINE_CONFIG": str(config)}
    proc = start_group([str(Path(sys.executable).with_name("dagster-webserver")),
                        "-m", "finetune_pipeline.definitions", "-d", str(PROJECT_ROOT),
                        "-h", "127.0.0.1", "-p", str(port)], log, cwd=PROJECT_ROOT, env=env)
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        stop_group(proc)


def _graphql(url: str, query: str, variables: dict | None = None) -> dict:
    """One request to the webserver's GraphQL endpoint, as the UI sends it."""
    request = urllib.request.Request(f"{url}/graphql", method="POST",
                                     data=json.dumps({"query": query, "variables": variables or {}}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        body = json.loads(response.read())
    assert not body.get("errors"), body["errors"]
    return body["data"]


def _serves_model_eval(url: str) -> bool:
    query = 'query { assetNodeOrError(assetKey: {path: ["model_eval"]}) { __typename } }'
    try:
        return _graphql(url, query)["assetNodeOrError"]["__typename"] == "AssetNode"
    except OSError:
        return False


@contextmanager
def _workspace(instance):
    """The code location loaded in process, as the daemon loads it."""
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(executable_path=sys.executable, module_name="finetune_pipeline.definitions",
                             working_directory=str(PROJECT_ROOT)), location_name="finetune_pipeline")
    with create_test_daemon_workspace_context(InProcessWorkspaceLoadTarget(origin), instance) as workspace:
        yield workspace


def _run_backfills(instance) -> None:
    """What the daemon does: iterate until every requested backfill is done."""
    with _workspace(instance) as workspace:
        for _ in range(20):
            list(execute_backfill_iteration(workspace, logging.getLogger("backfill")))
            if all(b.status != BulkActionStatus.REQUESTED for b in instance.get_backfills()):
                return
    raise AssertionError(f"backfills not done: {[(b.backfill_id, b.status) for b in instance.get_backfills()]}")


# The query behind the UI's backfills page (Overview -> Backfills).
BACKFILLS_QUERY = """
query { partitionBackfillsOrError { __typename ... on PartitionBackfills {
  results { id status title numPartitions isAssetBackfill assetSelection { path } } } } }
"""


def _latest(instance, asset: str, partition: str | None = None):
    return latest_materialization(instance, asset, partition)


def test_backfill_evaluates_every_version_and_leaderboard_ranks_them(evaluated, three_versions):
    instance, registered, backfill, url = evaluated
    versions = three_versions
    assert registered == sorted(versions.keys)  # base + two LoRA trainings with different configs
    assert backfill.status == BulkActionStatus.REQUESTED and backfill.is_asset_backfill
    assert backfill.tags["finetune/command"] == "backfill-evals"
    targets = backfill.asset_backfill_data.target_subset
    assert set(targets.get_partitions_subset(dg.AssetKey("model_eval")).get_partition_keys()) == set(versions.keys)
    # Both eval suites by default (--suite all): the test split and the general suite.
    assert {k.to_user_string() for k in targets.asset_keys} == {"model_eval", "general_eval", *PROMOTION}

    assert instance.get_backfill(backfill.backfill_id).status == BulkActionStatus.COMPLETED_SUCCESS
    # What the UI shows: the running webserver's answer to the backfills page's query.
    shown = _graphql(url, BACKFILLS_QUERY)
    [row] = shown["partitionBackfillsOrError"]["results"]
    assert row["id"] == backfill.backfill_id and row["status"] == "COMPLETED_SUCCESS" and row["isAssetBackfill"]
    assert row["title"] == "backfill-evals: 3 model version(s)" and row["numPartitions"] == 3
    assert sorted(a["path"][0] for a in row["assetSelection"]) == sorted(["model_eval", "general_eval", *PROMOTION])
    # multi_run backfill policy: one run per version.
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill.backfill_id}))
    eval_runs = [r for r in runs if r.tags.get(PARTITION_TAG)]
    assert sorted(r.tags[PARTITION_TAG] for r in eval_runs) == sorted(versions.keys)
    assert all(r.tags["dagster/asset_partition_range_end"] == r.tags[PARTITION_TAG] for r in eval_runs)

    metrics = {}
    for key in versions.keys:
        meta = _latest(instance, "model_eval", key).metadata
        assert meta["n"].value == 6 and meta["eval_set"].value == versions.eval_set.key
        metrics[key] = meta["exact_match"].value

    board_meta = _latest(instance, "leaderboard").metadata
    board = json.loads((versions.artifacts / "leaderboard" / board_meta["artifact_key"].value /
                        "leaderboard.json").read_text())
    ranking = [r["version"] for r in board["rows"]]
    assert ranking == sorted(metrics, key=lambda k: (-metrics[k], k))  # primary metric (exact_match), then key
    assert board["primary_metric"] == "exact_match" and board["eval_set"] == versions.eval_set.key
    assert board_meta["metrics_chart"].value.startswith("![metrics by version](data:image/png;base64,")
    assert "data:image/png;base64," in board_meta["confusion_matrix"].value
    assert f"suites: task {versions.eval_set.key}" in board_meta["table"].value
    rows = {r["version"]: r for r in board["rows"]}
    assert rows[versions.base]["cost_usd"] == 0.0 and rows[versions.base]["tokens_trained"] == 0
    for key in (versions.lora_a, versions.lora_b):
        assert rows[key]["tokens_trained"] > 0 and rows[key]["train_seconds"] > 0
        # Trained on this machine's CPU, as the adapter's lineage records: priced at the cpu rate.
        assert rows[key]["device"] == describe_device(1).name
        assert rows[key]["cost_usd"] == pytest.approx(
            rows[key]["train_seconds"] / 3600 * versions.cfg().costs.hourly_usd["cpu"], abs=1e-6)

    # First champion: the best version whose blocking checks passed.
    champion_meta = _latest(instance, "champion").metadata
    assert champion_meta["champion"].value == ranking[0] and champion_meta["promoted"].value is True
    checks = champion_meta["blocking_checks"].value
    for key in (versions.lora_a, versions.lora_b):
        assert checks[key] == {"merged_matches_base_plus_adapter": True}
    history = PromotionStore(versions.artifacts).history()
    assert history[-1]["champion"] == ranking[0] and history[-1]["promoted"] is True
    spec_meta = _latest(instance, "serving_spec").metadata
    assert spec_meta["version"].value == ranking[0]
    assert "-m vllm.entrypoints.openai.api_server --model " in spec_meta["vllm_command"].value
    assert f"--served-model-name {ranking[0]}" in spec_meta["vllm_command"].value


def test_changed_test_split_makes_every_eval_stale_until_backfilled(evaluated, three_versions):
    instance, _, _, url = evaluated
    versions = three_versions
    resolver = lambda: get_stale_status_resolver(instance, list(defs.assets))  # noqa: E731
    status = lambda key: resolver().get_status(dg.AssetKey("model_eval"), key)  # noqa: E731
    assert {status(k) for k in versions.keys} == {StaleStatus.FRESH}
    data_assets = [a for a in defs.assets if a.key.to_user_string() in
                   ("raw_examples", "base_model", "training_dataset", "eval_set")]
    evals = dg.AssetSelection.assets("model_eval")
    tick = dg.evaluate_automation_conditions(defs, instance, asset_selection=evals)
    assert tick.total_requested == 0

    # The data re-materialized unchanged (as every train_and_merge run does): same eval set data
    # version, so the automation re-evaluates nothing.
    dg.materialize(data_assets, instance=instance, resources={"settings": PipelineSettings()})
    tick = dg.evaluate_automation_conditions(defs, instance, asset_selection=evals, cursor=tick.cursor)
    assert tick.total_requested == 0 and {status(k) for k in versions.keys} == {StaleStatus.FRESH}

    # New rows: some land in the test split (split by a hash of the input).
    extra = versions.raw_dir / "more_tickets.jsonl"
    write_jsonl(extra, [seed_row(f"My invoice number {i} was charged twice this month, please refund it")
                        for i in range(40)])
    try:
        result = dg.materialize(data_assets, instance=instance, resources={"settings": PipelineSettings()})
        new_eval_set = result.output_for_node("eval_set")
        assert new_eval_set.key != versions.eval_set.key
        assert {status(k) for k in versions.keys} == {StaleStatus.STALE}
        # The automation sensor would re-evaluate every version (the UI's "Materialize stale" as well).
        tick = dg.evaluate_automation_conditions(defs, instance, asset_selection=evals, cursor=tick.cursor)
        assert set(tick.get_requested_partitions(dg.AssetKey("model_eval"))) == set(versions.keys)
        causes = resolver().get_stale_causes(dg.AssetKey("model_eval"), versions.base)
        assert [c.dependency.asset_key.to_user_string() for c in causes] == ["eval_set"]
        assert "data version" in causes[0].reason

        # --config: the backfill's runs get the file through run config (the settings resource).
        assert cli.main(["backfill-evals", "--no-promote", "--config", str(versions.config_a), "--url", url]) == 0
        assert instance.get_backfills()[0].run_config == {
            "resources": {"settings": {"config": {"config_path": str(versions.config_a)}}}}
        _run_backfills(instance)
        assert {status(k) for k in versions.keys} == {StaleStatus.FRESH}
        for key in versions.keys:
            assert _latest(instance, "model_eval", key).metadata["eval_set"].value == new_eval_set.key
        # All evaluated again: nothing left to request. A new version is requested alone.
        tick = dg.evaluate_automation_conditions(defs, instance, asset_selection=evals, cursor=tick.cursor)
        assert tick.total_requested == 0
        instance.add_dynamic_partitions("model_versions", ["lora-0000new"])
        try:
            tick = dg.evaluate_automation_conditions(defs, instance, asset_selection=evals, cursor=tick.cursor)
            assert set(tick.get_requested_partitions(dg.AssetKey("model_eval"))) == {"lora-0000new"}
        finally:
            instance.delete_dynamic_partition("model_versions", "lora-0000new")
    finally:
        extra.unlink()


def test_backfill_evals_refuses_unknown_versions(evaluated, capsys):
    instance, _, _, url = evaluated
    before = len(instance.get_backfills())
    assert cli.main(["backfill-evals", "lora-nope", "--url", url]) == 2
    err = capsys.readouterr().err
    known = ", ".join(instance.get_dynamic_partitions("model_versions"))  # the webserver's instance: this one
    assert f"not model versions in this instance: ['lora-nope'] (known: {known})" in err
    assert len(instance.get_backfills()) == before


def test_backfill_evals_without_a_webserver_is_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    assert cli.main(["backfill-evals", "--url", url]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"finetune-pipeline backfill-evals: error: no Dagster webserver answers at {url} ("), err
    assert "start it with `dagster dev -w workspace.yaml` (or pass --url)" in err
    assert not any(tmp_path.iterdir())  # no instance of its own was created or written


@contextmanager
def _answering(respond):
    """A loopback HTTP server: `respond(request body)` gives (status, body, content type) for each POST.

    Yields (url, the paths POSTed, in order).
    """
    posts: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            posts.append(self.path)
            status, body, content_type = respond(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", posts
    finally:
        server.shutdown()
        server.server_close()


GRAPHQL_ERROR = {"errors": [{"message": 'Cannot query field "launchPartitionBackfill"\non type Mutation'}]}


@pytest.mark.parametrize(("status", "body", "content_type", "expected"), [
    (404, b"Not Found", "text/plain",
     ("/graphql answered HTTP 404 Not Found: is a Dagster webserver serving there? "
      "start it with `dagster dev -w workspace.yaml`")),
    (200, b"<html>some other app</html>", "text/html", "/graphql did not answer GraphQL (not JSON)"),
    (400, json.dumps(GRAPHQL_ERROR).encode(), "application/json",
     ('answered HTTP 400: Cannot query field "launchPartitionBackfill" on type Mutation; '
      "is it the webserver `dagster dev -w workspace.yaml` starts")),
], ids=["http-404", "not-json", "graphql-error"])
def test_backfill_evals_against_a_server_that_answers_an_error_is_one_clear_line(
        status, body, content_type, expected, capsys):
    with _answering(lambda _: (status, body, content_type)) as (url, posts):
        assert cli.main(["backfill-evals", "--url", url + "/"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("finetune-pipeline backfill-evals: error: ") and url in err and expected in err, err
    assert posts == ["/graphql"]  # asked once, never retried


def test_backfill_evals_refused_by_the_webserver_is_one_clear_line(capsys):
    """The versions query succeeds; the launch answers an error of LaunchBackfillResult (a read-only webserver)."""
    def respond(request: bytes):
        if json.loads(request)["query"].lstrip().startswith("query"):
            data = {"assetNodeOrError": {"__typename": "AssetNode", "partitionKeys": ["base-tiny-random"]}}
        else:
            data = {"launchPartitionBackfill": {"__typename": "UnauthorizedError",
                                                "message": "Authorization failed:\nread-only webserver"}}
        return 200, json.dumps({"data": data}).encode(), "application/json"

    with _answering(respond) as (url, posts):
        assert cli.main(["backfill-evals", "--url", url]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err, err
    assert err == (f"finetune-pipeline backfill-evals: error: the Dagster webserver at {url} did not launch the "
                   "backfill: UnauthorizedError: Authorization failed: read-only webserver\n")
    assert posts == ["/graphql", "/graphql"]  # the versions, then one launch: never retried

"""The production instance (deploy/dagster.yaml) against a real, throwaway PostgreSQL server.

The server is the Debian `postgresql` package's own binaries (`scripts/setup.sh dev`
installs it): `initdb` into a temporary folder, `pg_ctl start` on a free loopback
port with password authentication, stopped at the end. The connection reaches
Dagster only through the DAGSTER_PG_* environment variables the YAML names.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import dagster as dg
import pytest

from finetune_pipeline.definitions import defs
from finetune_pipeline.lib import PROJECT_ROOT
from finetune_pipeline_tests.helpers import SAMPLE_RAW, TRAIN_AND_MERGE, materialized, write_config
from finetune_pipeline_tests.local_servers import free_port

# Starts a PostgreSQL server; materializes the training graph into it.
pytestmark = pytest.mark.slow

PG_BINS = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
PASSWORD = "not-a-real-secret-7f3a"


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server on 127.0.0.1 with user `dagster` (password auth) and database `finetune`."""
    if not PG_BINS:
        pytest.skip("needs the Debian postgresql package (/usr/lib/postgresql/*/bin; scripts/setup.sh dev installs it)")
    bin_dir = Path(PG_BINS[-1])
    # initdb refuses to run as root: as root, run the server as the package's `postgres` user.
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    folder = Path(tempfile.mkdtemp(prefix="pg-test-"))
    if as_user:
        shutil.chown(folder, "postgres")
    data = folder / "data"
    (folder / "pw").write_text(PASSWORD + "\n")
    if as_user:
        shutil.chown(folder / "pw", "postgres")
    port = free_port()

    def run(*args: str, timeout: int = 60):
        subprocess.run([*as_user, *args], check=True, capture_output=True, timeout=timeout)

    run(str(bin_dir / "initdb"), "-D", str(data), "-U", "dagster", f"--pwfile={folder / 'pw'}",
        "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-sync", timeout=120)
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "server.log"), "-w",
        "-t", "60", "start", timeout=90)
    try:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=port, user="dagster", password=PASSWORD, dbname="postgres")
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
        conn.cursor().execute("CREATE DATABASE finetune")
        conn.close()
        yield {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(port), "DAGSTER_PG_USER": "dagster",
               "DAGSTER_PG_PASSWORD": PASSWORD, "DAGSTER_PG_DB": "finetune"}
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "-t", "30", "stop", timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def production_instance(postgres, tmp_path, monkeypatch):
    """deploy/dagster.yaml as it ships, in a fresh DAGSTER_HOME, connected through the environment."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    for name, value in postgres.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        yield instance


def _sql(postgres: dict, query: str) -> list[tuple]:
    import psycopg2

    with psycopg2.connect(host=postgres["DAGSTER_PG_HOST"], port=int(postgres["DAGSTER_PG_PORT"]),
                          user=postgres["DAGSTER_PG_USER"], password=postgres["DAGSTER_PG_PASSWORD"],
                          dbname=postgres["DAGSTER_PG_DB"]) as conn:
        cursor = conn.cursor()
        cursor.execute(query)
        return cursor.fetchall()


def test_production_config_uses_postgres_with_retries_and_monitoring(production_instance):
    instance = production_instance
    for storage in (instance.run_storage, instance.event_log_storage, instance.schedule_storage):
        assert type(storage).__module__.startswith("dagster_postgres"), type(storage)
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
    assert instance.run_monitoring_enabled and instance.run_monitoring_max_resume_run_attempts == 0
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    # The password only ever comes from the environment: the file names the variable, not the value.
    assert PASSWORD not in (PROJECT_ROOT / "deploy" / "dagster.yaml").read_text()


def test_graph_materializes_into_postgres(production_instance, postgres, tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNE_PIPELINE_CONFIG", str(write_config(tmp_path, SAMPLE_RAW)))
    instance = production_instance

    trained = defs.resolve_job_def("train_and_merge").execute_in_process(instance=instance)
    assert materialized(trained) == TRAIN_AND_MERGE
    versions = sorted(instance.get_dynamic_partitions("model_versions"))
    assert versions[0] == "base-tiny-random" and versions[1].startswith("lora-")
    evaluated = defs.resolve_job_def("evaluate_version").execute_in_process(instance=instance,
                                                                            partition_key=versions[1])
    assert materialized(evaluated) == [f"general_eval[{versions[1]}]", f"model_eval[{versions[1]}]"]

    # Read back from the database itself, not through Dagster's storage classes.
    runs = dict(_sql(postgres, "SELECT run_id, status FROM runs"))
    assert runs == {trained.run_id: "SUCCESS", evaluated.run_id: "SUCCESS"}
    in_database = {(key, partition) for key, partition in _sql(
        postgres, "SELECT asset_key, partition FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'")}
    for asset in ("raw_examples", "training_dataset", "base_model", "lora_adapter", "merged_model"):
        assert (f'["{asset}"]', None) in in_database
    assert ('["model_eval"]', versions[1]) in in_database
    assert sorted(k for (k,) in _sql(postgres, "SELECT partition FROM dynamic_partitions "
                                               "WHERE partitions_def_name = 'model_versions'")) == versions
    checks = {name for (name,) in _sql(postgres, "SELECT check_name FROM asset_check_executions")}
    assert {"rows_accounted_for", "min_train_rows", "merged_matches_base_plus_adapter"} <= checks

    # And the same instance answers the questions the UI asks.
    record = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("model_eval"), asset_partitions=[versions[1]]), limit=1).records[0]
    assert record.run_id == evaluated.run_id and record.asset_materialization.metadata["n"].value == 6

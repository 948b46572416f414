"""The OpenAI trainer through a real Dagster instance, against OpenAI's recorded HTTP shapes.

No network: respx intercepts the real `openai` client's HTTP layer (the client
is built on httpx2/httpcore2, which respx reaches through pytest-httpx2's
`httpcore2` mocker). `FakeOpenAI` answers with the JSON shapes of OpenAI's API
reference for files, fine_tuning.jobs and their events, following a scripted
job timeline. The dataset is a real `training_dataset` made by the real stages
from a small raw folder, tokenized by the tiny random model.
"""

from __future__ import annotations

import json
import re

import dagster as dg
import httpx
import openai
import pytest
import respx
from dagster._serdes import serialize_value

from finetune_pipeline import cli
from finetune_pipeline.definitions import defs
from finetune_pipeline.defs.openai_training import (
    OpenAIClientResource,
    openai_fine_tuned_model,
)
from finetune_pipeline.defs.settings import PipelineSettings
from finetune_pipeline.lib import stages
from finetune_pipeline.lib.config import load_config
from finetune_pipeline.lib.storage.artifacts import ArtifactRef
from finetune_pipeline.lib.stages.openai import fine_tune
from finetune_pipeline.lib.training.openai.jobs import LEDGER
from finetune_pipeline.lib.training.openai.format_check import FormatError
from finetune_pipeline.lib.versions.registry import Registry
from finetune_pipeline_tests.helpers import seed_row, write_config, write_jsonl

# openai>=3 sends through httpx2/httpcore2, which respx reaches with pytest-httpx2's mocker (dev extra);
# older clients use httpx/httpcore, which respx mocks by itself.
MOCKER = "httpcore2" if "httpx2" in openai._base_client.__dict__ else "httpcore"
if MOCKER == "httpcore2":
    pytest.importorskip("pytest_httpx2", reason="needs pytest-httpx2 (dev extra) to mock the openai client's httpx2")

BASE = "https://api.openai.com/v1"
SECRET = "sk-test-SECRET123"
ORG = "org-Xq3recorded"
CREATED = 1732000000
FAST_POLL = {"poll_interval_s": 0.0, "poll_max_interval_s": 0.0}

# Event sequences as OpenAI's API emits them (messages from real job logs).
VALIDATING = [("info", "Created fine-tuning job: {job}"),
              ("info", "Validating training file: {train} and validation file: {val}")]
QUEUED = [("info", "Files validated, moving job to queued state")]
STARTED = [("info", "Fine-tuning job started")]
STEPS = [("info", "Step 1/24: training loss=2.31, validation loss=2.40", {"step": 1, "train_loss": 2.31,
                                                                           "valid_loss": 2.40, "total_steps": 24}),
         ("info", "Step 24/24: training loss=0.12, validation loss=0.19, full validation loss=0.21",
          {"step": 24, "train_loss": 0.12, "valid_loss": 0.19, "full_valid_loss": 0.21, "total_steps": 24})]
DONE = [("info", "New fine-tuned model created: {model}"), ("info", "The job has successfully completed")]
SUCCESS = [("validating_files", VALIDATING), ("queued", QUEUED), ("running", STARTED), ("running", STEPS),
           ("succeeded", DONE)]


class FakeOpenAI:
    """The files and fine-tuning endpoints, answering with recorded shapes along a scripted timeline.

    `steps` is a list of (job status, events that appear at that step); creating
    the job is step 0 and each retrieve of the job moves one step on. `faults`
    queues canned responses (or exceptions) per route, served before the script.
    """

    def __init__(self, router: respx.Router, steps=SUCCESS, *, trained_tokens=14_400, error=None):
        self.steps, self.trained_tokens, self.error = steps, trained_tokens, error
        self.faults: dict[str, list] = {}
        self.files: dict[str, bytes] = {}
        self.jobs: dict[str, dict] = {}
        self.step: dict[str, int] = {}
        self.script: dict[str, list] = {}  # each job follows the script current when it was created
        self.upload = router.post(f"{BASE}/files").mock(side_effect=self._route("upload", self._upload))
        self.file_get = router.get(url__regex=rf"{BASE}/files/(?P<file_id>file-\w+)$").mock(
            side_effect=self._route("file_get", self._file_get))
        self.create = router.post(f"{BASE}/fine_tuning/jobs").mock(side_effect=self._route("create", self._create))
        self.retrieve = router.get(url__regex=rf"{BASE}/fine_tuning/jobs/(?P<job_id>ftjob-\w+)$").mock(
            side_effect=self._route("retrieve", self._retrieve))
        self.events = router.get(url__regex=rf"{BASE}/fine_tuning/jobs/(?P<job_id>ftjob-\w+)/events").mock(
            side_effect=self._route("events", self._events))
        self.cancel = router.post(url__regex=rf"{BASE}/fine_tuning/jobs/(?P<job_id>ftjob-\w+)/cancel$").mock(
            side_effect=self._route("cancel", self._cancel))

    def _route(self, name, handler):
        def side_effect(request, **params):
            if self.faults.get(name):
                fault = self.faults[name].pop(0)
                if isinstance(fault, BaseException):
                    raise fault
                return fault
            return handler(request, **params)
        return side_effect

    # POST /files (multipart: purpose + file)
    def _upload(self, request):
        body = request.content
        assert b'name="purpose"\r\n\r\nfine-tune\r\n' in body
        filename = re.search(rb'name="file"; filename="([^"]+)"', body).group(1).decode()
        file_id = f"file-{len(self.files) + 1:02d}Rk7hYb2Qw"
        self.files[file_id] = body
        return httpx.Response(200, json=self._file(file_id, filename, len(body)))

    def _file(self, file_id, filename, size):
        return {"object": "file", "id": file_id, "purpose": "fine-tune", "filename": filename, "bytes": size,
                "created_at": CREATED, "expires_at": None, "status": "processed", "status_details": None}

    def _file_get(self, request, file_id):
        if file_id not in self.files:
            return httpx.Response(404, json={"error": {"message": f"No such File object: {file_id}",
                                                       "type": "invalid_request_error", "param": "id", "code": None}})
        return httpx.Response(200, json=self._file(file_id, "reused.jsonl", len(self.files[file_id])))

    # POST /fine_tuning/jobs
    def _create(self, request):
        req = json.loads(request.content)
        job_id = f"ftjob-{len(self.jobs) + 1}aB3cD4eF5gH6"
        self.jobs[job_id], self.step[job_id], self.script[job_id] = req, 0, list(self.steps)
        return httpx.Response(200, json=self.job_json(job_id))

    def _retrieve(self, request, job_id):
        self.step[job_id] = min(self.step[job_id] + 1, len(self.script[job_id]) - 1)
        return httpx.Response(200, json=self.job_json(job_id))

    def _cancel(self, request, job_id):
        self.script[job_id] = self.script[job_id][: self.step[job_id] + 1] + [
            ("cancelled", [("warn", "Fine tuning process stopping due to job cancellation")])]
        self.step[job_id] += 1
        return httpx.Response(200, json=self.job_json(job_id))

    def job_json(self, job_id: str) -> dict:
        req, status = self.jobs[job_id], self.script[job_id][self.step[job_id]][0]
        asked = req["method"]["supervised"]["hyperparameters"]
        resolved = {"n_epochs": asked["n_epochs"] if asked["n_epochs"] != "auto" else 3,
                    "batch_size": asked["batch_size"] if asked["batch_size"] != "auto" else 1,
                    "learning_rate_multiplier": asked["learning_rate_multiplier"]
                    if asked["learning_rate_multiplier"] != "auto" else 1.8}
        hyper = resolved if status not in ("validating_files", "queued") else asked
        done = status in ("succeeded", "failed", "cancelled")
        return {
            "object": "fine_tuning.job", "id": job_id, "model": req["model"], "created_at": CREATED,
            "finished_at": CREATED + 900 if done else None,
            "fine_tuned_model": self.model_id(job_id) if status == "succeeded" else None,
            "organization_id": ORG, "result_files": ["file-ResultsCsv01"] if status == "succeeded" else [],
            "status": status, "validation_file": req.get("validation_file"), "training_file": req["training_file"],
            "hyperparameters": hyper, "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}},
            "trained_tokens": self.trained_tokens if status == "succeeded" else None,
            "error": self.error if status == "failed" else None, "user_provided_suffix": req.get("suffix"),
            "seed": req.get("seed", 0), "estimated_finish": None, "integrations": [],
            "metadata": req.get("metadata"),
        }

    def model_id(self, job_id: str) -> str:
        req = self.jobs[job_id]
        return f"ft:{req['model']}:{ORG}:{req['suffix']}:{job_id[-8:]}"

    # GET /fine_tuning/jobs/{id}/events?limit=&after=  (newest first, cursor = an event id)
    def visible_events(self, job_id: str) -> list[dict]:
        req, out = self.jobs[job_id], []
        names = {"job": job_id, "train": req["training_file"], "val": req.get("validation_file"),
                 "model": self.model_id(job_id)}
        for i, (_, events) in enumerate(self.script[job_id][: self.step[job_id] + 1]):
            for j, (level, message, *data) in enumerate(events):
                out.append({"object": "fine_tuning.job.event", "id": f"ftevent-{job_id[-6:]}{i}x{j}",
                            "created_at": CREATED + 10 * i + j, "level": level,
                            "message": message.format(**names), "data": data[0] if data else {},
                            "type": "metrics" if data else "message"})
        return out

    def _events(self, request, job_id):
        newest_first = list(reversed(self.visible_events(job_id)))
        after, limit = request.url.params.get("after"), int(request.url.params.get("limit", 20))
        if after:
            newest_first = newest_first[[e["id"] for e in newest_first].index(after) + 1:]
        return httpx.Response(200, json={"object": "list", "data": newest_first[:limit],
                                         "has_more": len(newest_first) > limit})


def rate_limited() -> httpx.Response:
    # OpenAI's 429 body; retry-after-ms keeps the client's retry fast here.
    return httpx.Response(429, headers={"retry-after-ms": "5", "x-request-id": "req_429recorded"},
                          json={"error": {"message": "Rate limit reached for requests", "type": "requests",
                                          "param": None, "code": "rate_limit_exceeded"}})


def server_error() -> httpx.Response:
    return httpx.Response(503, headers={"retry-after-ms": "5"},
                          json={"error": {"message": "The server is overloaded or not ready yet.",
                                          "type": "server_error", "param": None, "code": None}})


# --- fixtures -----------------------------------------------------------------------------------

CATEGORIES = ["billing", "shipping", "account", "refund"]
RAW_ROWS = [seed_row(f"Customer message number {i}: my {CATEGORIES[i % 4]} question needs an answer please",
                     CATEGORIES[i % 4]) for i in range(40)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> ArtifactRef:
    """A real training_dataset (30 train / 4 val rows) made once by the real stages."""
    folder = tmp_path_factory.mktemp("openai_dataset")
    write_jsonl(folder / "raw" / "tickets.jsonl", RAW_ROWS)
    cfg = load_config(write_config(folder, folder / "raw"))
    raw, base = stages.raw_examples(cfg), stages.base_model(cfg)
    return stages.training_dataset(cfg, raw, base)


@pytest.fixture
def project(tmp_path, monkeypatch):
    """The key set, a Dagster instance, and `configure(**openai)`: OpenAI on, fast polling, own artifacts."""
    write_jsonl(tmp_path / "raw" / "tickets.jsonl", RAW_ROWS)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))

    def configure(**openai):
        path = write_config(tmp_path, tmp_path / "raw", openai={"enabled": True, **FAST_POLL, **openai})
        monkeypatch.setenv("FINETUNE_PIPELINE_CONFIG", str(path))
        return load_config(path)

    with dg.instance_for_test(temp_dir=str(home)) as instance:
        yield instance, configure


@pytest.fixture
def api():
    with respx.mock(using=MOCKER, assert_all_mocked=True, assert_all_called=False) as router:
        yield router


class GivenDataset(dg.IOManager):
    """Hands the asset the module's dataset as its `training_dataset` input."""

    def __init__(self, ref: ArtifactRef):
        self.ref = ref

    def handle_output(self, context, obj):
        pass

    def load_input(self, context):
        return self.ref


def materialize(instance, dataset: ArtifactRef):
    """The asset alone through the real instance, its input the dataset made by the real stages."""
    return dg.materialize(
        [dg.SourceAsset("training_dataset"), openai_fine_tuned_model], instance=instance,
        resources={"settings": PipelineSettings(), "openai_client": OpenAIClientResource(),
                   "io_manager": dg.IOManagerDefinition.hardcoded_io_manager(GivenDataset(dataset))},
        raise_on_error=False)


def run_job(instance):
    """The `openai_fine_tune` job as defined: data assets, their blocking checks, then the OpenAI asset."""
    return defs.resolve_job_def("openai_fine_tune").execute_in_process(instance=instance, raise_on_error=False)


def logs(instance, run_id) -> list[str]:
    return [e.user_message for e in instance.all_logs(run_id)]


def step_error(result) -> str:
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failures, "expected a failed step"
    error = failures[0].step_failure_data.error
    text = []
    while error is not None:
        text.append(error.message)
        error = error.cause
    return "\n".join(text)


def materialization(instance):
    event = instance.get_latest_materialization_event(dg.AssetKey("openai_fine_tuned_model"))
    return event.asset_materialization if event else None


# --- tests ----------------------------------------------------------------------------------------

def test_success_end_to_end_registers_the_ft_model_as_a_version(project, api, capsys):
    instance, configure = project
    cfg = configure()
    # An unknown status in the middle: not terminal, the poll goes on.
    fake = FakeOpenAI(api, SUCCESS[:3] + [("paused_for_maintenance", [])] + SUCCESS[3:])

    result = run_job(instance)
    assert result.success, step_error(result)

    dataset = result.output_for_node("training_dataset")
    train_bytes = (dataset.dir / "train.jsonl").read_bytes()
    # Two uploads (train and val) of the exact dataset files, purpose fine-tune.
    assert fake.upload.call_count == 2
    assert train_bytes in fake.files["file-01Rk7hYb2Qw"]
    assert (dataset.dir / "val.jsonl").read_bytes() in fake.files["file-02Rk7hYb2Qw"]
    assert fake.upload.calls[0].request.headers["authorization"] == f"Bearer {SECRET}"
    # One job with the configured hyperparameters and suffix.
    assert fake.create.call_count == 1
    body = json.loads(fake.create.calls[0].request.content)
    assert body["model"] == "gpt-4o-mini-2024-07-18" and body["suffix"] == "finetune-pipeline"
    assert body["training_file"] == "file-01Rk7hYb2Qw" and body["validation_file"] == "file-02Rk7hYb2Qw"
    assert body["method"] == {"type": "supervised", "supervised": {"hyperparameters": {
        "n_epochs": 3, "batch_size": "auto", "learning_rate_multiplier": "auto"}}}
    assert body["seed"] == 42
    # Polled through every status, the unknown one included, until succeeded.
    assert fake.retrieve.call_count == len(SUCCESS)

    # Every event reached the Dagster log once, oldest first.
    job_id = "ftjob-1aB3cD4eF5gH6"
    expected = [e["message"] for e in fake.visible_events(job_id)]
    streamed = [m.split("] ", 1)[1] for m in logs(instance, result.run_id) if m.startswith(f"[{job_id}] ")]
    assert streamed == expected and len(expected) == 8
    assert any("unknown status 'paused_for_maintenance'" in m for m in logs(instance, result.run_id))

    # Registered as a model version (and a partition of model_eval) with its ft: id as remote id.
    model_id = fake.model_id(job_id)
    meta = materialization(instance).metadata
    key = meta["version_key"].value
    assert key == "openai-finetune-pipeline-3cD4eF5gH6"  # suffix + the job id's last 10 characters
    assert key in instance.get_dynamic_partitions("model_versions")
    manifest = Registry(cfg.artifacts_dir).get(key)
    assert manifest.kind == "openai" and manifest.remote_id == model_id and manifest.weights is None

    # Trained tokens and the cost from the price table.
    assert meta["fine_tuned_model"].value == model_id
    assert meta["trained_tokens"].value == 14_400
    assert meta["estimated_cost_usd"].value == pytest.approx(14_400 / 1e6 * 3.00)
    assert meta["hyperparameters"].value == {"n_epochs": 3, "batch_size": 1, "learning_rate_multiplier": 1.8}
    assert meta["final_metrics"].value["full_valid_loss"] == 0.21

    # Lineage: the artifact names the dataset it was trained on; the CLI walks it back to the raw file.
    lineage = json.loads((cfg.artifacts_dir / manifest.artifact.asset / manifest.artifact.key / "lineage.json").read_text())
    assert lineage["inputs"] == [dataset.as_input()]
    assert lineage["info"]["job_id"] == job_id
    assert cli.main(["lineage", key, "--config", str(cfg.base_dir + "/config.yaml")]) == 0
    out = capsys.readouterr().out
    assert f"remote id {model_id}" in out and "training_dataset " in out and "tickets.jsonl" in out


def test_rate_limit_and_server_error_are_retried_by_the_client(project, dataset, api):
    instance, configure = project
    configure()
    fake = FakeOpenAI(api)
    fake.faults["upload"] = [rate_limited()]
    fake.faults["create"] = [rate_limited()]
    fake.faults["retrieve"] = [server_error()]

    result = materialize(instance, dataset)
    assert result.success, step_error(result)
    assert fake.upload.call_count == 3  # 429, then train and val
    assert len(fake.files) == 2
    assert fake.create.call_count == 2 and len(fake.jobs) == 1  # 429 then created once
    assert fake.retrieve.call_count == len(SUCCESS)  # the 503, then the script
    assert materialization(instance).metadata["trained_tokens"].value == 14_400

    # Materialized again with nothing changed: a cache hit, and not a single request.
    calls = len(api.calls)
    again = materialize(instance, dataset)
    assert again.success and len(api.calls) == calls
    assert materialization(instance).metadata["cache_hit"].value is True


def test_failed_job_raises_with_the_jobs_own_error(project, dataset, api):
    instance, configure = project
    cfg = configure()
    error = {"code": "invalid_training_file", "param": "training_file",
             "message": "The job failed due to an invalid training file. Example 7: assistant message too long."}
    fake = FakeOpenAI(api, SUCCESS[:3] + [("failed", [("error", "Fine-tuning job failed")])], error=error)

    result = materialize(instance, dataset)
    assert not result.success
    text = step_error(result)
    assert "ftjob-1aB3cD4eF5gH6 failed: The job failed due to an invalid training file. " \
           "Example 7: assistant message too long. (code invalid_training_file, param training_file)" in text
    assert any(m.endswith("Fine-tuning job failed") for m in logs(instance, result.run_id))
    assert fake.create.call_count == 1
    assert materialization(instance) is None
    assert Registry(cfg.artifacts_dir).keys() == []  # nothing registered


def test_cancelled_job_fails_the_run_and_a_rerun_starts_a_new_job_without_reuploading(project, dataset, api):
    instance, configure = project
    configure()
    fake = FakeOpenAI(api, SUCCESS[:3] + [("cancelled", [("warn", "Fine tuning process stopping due to "
                                                                   "job cancellation")])])
    result = materialize(instance, dataset)
    assert not result.success
    assert "ftjob-1aB3cD4eF5gH6 was cancelled before it finished" in step_error(result)
    assert materialization(instance) is None

    # The cancelled job is not resumed: a new one is created from the same uploads.
    fake.steps = SUCCESS
    again = materialize(instance, dataset)
    assert again.success, step_error(again)
    assert fake.upload.call_count == 2 and fake.create.call_count == 2
    assert materialization(instance).metadata["job_id"].value == "ftjob-2aB3cD4eF5gH6"


def test_terminating_the_run_cancels_the_job(project, dataset, api):
    instance, configure = project
    configure()
    fake = FakeOpenAI(api)
    # Dagster delivers a run termination as this exception, wherever the step is (here: mid-poll).
    fake.faults["retrieve"] = [dg.DagsterExecutionInterruptedError()]

    result = materialize(instance, dataset)
    assert not result.success
    assert fake.cancel.call_count == 1
    assert fake.cancel.calls[0].request.url.path == "/v1/fine_tuning/jobs/ftjob-1aB3cD4eF5gH6/cancel"
    assert any("cancelled job ftjob-1aB3cD4eF5gH6 because the run was interrupted (status now cancelled)" in m
               for m in logs(instance, result.run_id))


def test_retried_run_reuses_uploads_and_the_running_job(project, dataset, api):
    instance, configure = project
    cfg = configure(max_wait_s=0)  # the first run gives up waiting while the job runs on
    fake = FakeOpenAI(api)
    first = materialize(instance, dataset)
    assert not first.success
    assert "keeps running, and a rerun with the same inputs resumes waiting for it" in step_error(first)
    assert (fake.upload.call_count, fake.create.call_count, fake.cancel.call_count) == (2, 1, 0)
    ledger = json.loads((cfg.artifacts_dir / LEDGER).read_text())[BASE]
    assert sorted(f["id"] for f in ledger["files"].values()) == ["file-01Rk7hYb2Qw", "file-02Rk7hYb2Qw"]

    configure()  # same inputs, patient again
    second = materialize(instance, dataset)
    assert second.success, step_error(second)
    # No second upload, no second job: the files are looked up, the job is resumed.
    assert (fake.upload.call_count, fake.create.call_count) == (2, 1)
    assert fake.file_get.call_count == 2
    messages = logs(instance, second.run_id)
    assert any("resuming job ftjob-1aB3cD4eF5gH6 (queued), created for these same inputs by run "
               f"{first.run_id}" in m for m in messages)
    assert sum("reusing upload file-0" in m for m in messages) == 2
    # Events already seen in the first run are streamed again in the new run's log, once each.
    job_events = [m for m in messages if m.startswith("[ftjob-1aB3cD4eF5gH6] ")]
    assert len(job_events) == len(set(job_events)) == 8
    assert materialization(instance).metadata["job_id"].value == "ftjob-1aB3cD4eF5gH6"


def test_validation_errors_stop_before_any_request(project, dataset, api):
    instance, configure = project
    configure(token_limit=40, min_examples=1000)
    result = materialize(instance, dataset)
    assert not result.success
    text = step_error(result)
    assert "OpenAI format check failed" in text
    assert re.search(r"training_dataset/\w+/train\.jsonl line 1: too_many_tokens: \d+ tokens, more than the limit "
                     r"of 40", text)
    assert re.search(r"train\.jsonl line \d+: too_few_examples: \d+ example\(s\); OpenAI fine-tuning needs at "
                     r"least 1000", text)
    assert len(api.calls) == 0


def test_format_errors_in_the_files_stop_before_any_request(project, api, tmp_path):
    instance, configure = project
    cfg = configure(min_examples=2)
    folder = tmp_path / "broken_dataset"
    good = {"messages": [{"role": "user", "content": "Where is my parcel?"},
                         {"role": "assistant", "content": '{"category": "shipping"}'}]}
    write_jsonl(folder / "train.jsonl", [good, {"messages": [{"role": "robot", "content": "hi"}]}, good])
    write_jsonl(folder / "val.jsonl", [good, {"messages": [{"role": "user"}, {"role": "assistant", "content": ""}]}])
    with pytest.raises(FormatError) as e:
        fine_tune(cfg, ArtifactRef("training_dataset", "broken", str(folder)),
                  openai.OpenAI(api_key=SECRET, base_url=BASE))
    text = str(e.value)
    assert f"{folder / 'train.jsonl'} line 2: unrecognized_role" in text
    assert f"{folder / 'train.jsonl'} line 2: example_missing_assistant_message" in text
    assert f"{folder / 'val.jsonl'} line 2: message_missing_key" in text
    assert f"{folder / 'val.jsonl'} line 2: missing_content: message 1 (user)" in text
    assert e.value.report.error_counts() == {"example_missing_assistant_message": 1, "message_missing_key": 1,
                                             "missing_content": 2, "unrecognized_role": 1}
    assert len(api.calls) == 0


def test_disabled_by_default_skips_without_a_key_or_a_request(project, dataset, api, monkeypatch):
    instance, configure = project
    configure(enabled=False)
    monkeypatch.delenv("OPENAI_API_KEY")
    result = materialize(instance, dataset)
    assert result.success
    assert materialization(instance) is None
    assert any("skipped: openai.enabled is false" in m for m in logs(instance, result.run_id))
    assert len(api.calls) == 0


def test_the_key_appears_in_no_log_metadata_lineage_or_error(project, dataset, api):
    instance, configure = project
    cfg = configure()
    # Even an event that quotes the key (no real one does) reaches the log and the artifact redacted.
    echoing = [("queued", QUEUED + [("warn", f"Request authenticated with {SECRET}")])]
    FakeOpenAI(api, SUCCESS[:1] + echoing + SUCCESS[2:])
    ok = materialize(instance, dataset)
    assert ok.success, step_error(ok)
    assert any(m.endswith("Request authenticated with ***") for m in logs(instance, ok.run_id))

    # A server that echoes the key back in an error (OpenAI's 401 names part of it).
    configure(suffix="second-try")
    unauthorized = httpx.Response(401, json={"error": {
        "message": f"Incorrect API key provided: {SECRET}. You can find your API key at "
                   "https://platform.openai.com/account/api-keys.",
        "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}})
    fake = FakeOpenAI(api)
    fake.faults["create"] = [unauthorized]
    bad = materialize(instance, dataset)
    assert not bad.success
    error_text = step_error(bad)
    assert "AuthenticationError" in error_text and "Incorrect API key provided: ***" in error_text
    # The key was really sent, so a leak would have been visible.
    assert api.calls.last.request.headers["authorization"] == f"Bearer {SECRET}"

    for run in (ok, bad):
        for entry in instance.all_logs(run.run_id):
            assert SECRET not in serialize_value(entry)
        assert SECRET not in json.dumps(instance.get_run_by_id(run.run_id).run_config)
    assert SECRET not in serialize_value(materialization(instance).metadata)
    assert SECRET not in error_text
    for path in cfg.artifacts_dir.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl"):
            assert SECRET not in path.read_text(), path


def test_polling_backs_off_up_to_the_configured_maximum(project, dataset, api):
    _, configure = project
    cfg = configure(poll_interval_s=1.0, poll_backoff=2.0, poll_max_interval_s=3.0)
    fake = FakeOpenAI(api)
    slept: list[float] = []
    client = openai.OpenAI(api_key=SECRET, base_url=BASE, max_retries=0)
    ref = fine_tune(cfg, dataset, client, sleep=slept.append)
    # One sleep between each of the five status reads: 1, 2, then capped at 3.
    assert slept == [1.0, 2.0, 3.0, 3.0]
    assert fake.retrieve.call_count == 4 and ref.info["status"] == "succeeded"


def test_own_group_and_job_and_no_other_job_selects_it():
    key = dg.AssetKey("openai_fine_tuned_model")
    graph = defs.resolve_asset_graph()
    assert graph.get(key).group_name == "openai"
    selecting = {job.name for job in defs.resolve_all_job_defs() if key in job.asset_layer.selected_asset_keys}
    # Only its own job and the implicit "materialize all" job, where it skips unless openai.enabled.
    assert selecting == {"openai_fine_tune", "__ASSET_JOB"}
    own = defs.resolve_job_def("openai_fine_tune").asset_layer.selected_asset_keys
    assert {k.to_user_string() for k in own} == {"raw_examples", "base_model", "training_dataset",
                                                  "openai_fine_tuned_model"}


def test_enabled_without_a_key_fails_clearly_before_any_request(project, dataset, api, monkeypatch):
    instance, configure = project
    configure()
    monkeypatch.delenv("OPENAI_API_KEY")
    result = materialize(instance, dataset)
    assert not result.success
    assert "no OpenAI API key: set the environment variable OPENAI_API_KEY" in step_error(result)
    assert len(api.calls) == 0

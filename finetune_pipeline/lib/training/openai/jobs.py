"""OpenAI fine-tuning jobs: validate, upload once, create or resume the job, wait for it, stream its events.

The stage that turns a dataset into an `openai_fine_tuned_model` artifact and a
model version is `lib/stages/openai.py`; this module talks to the API. Order of
work, and why:
1. Validate the JSONL against OpenAI's format rules (`openai_format`) before any
   request, so a bad row costs nothing and names its file, line and rule.
2. Upload train/val with purpose "fine-tune", keyed by content hash in a ledger
   under the artifacts root, so a retried run reuses the uploaded files ...
3. ... and the job already created for the same inputs (the ledger keys jobs by
   the recipe key), instead of paying twice.
4. Poll with backoff until a terminal status, streaming the job's events as
   they appear. Unknown statuses are not terminal: the API may add some.
5. A failed job raises with its own error message; an interrupted wait (run
   terminated, Ctrl-C) cancels the job.

The API key lives only inside the client; every message this module raises is
passed through `redact`, in case a server echoes the key back.
"""

from __future__ import annotations

import fcntl
import json
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import openai

from finetune_pipeline.lib.storage.hashing import hash_file
from finetune_pipeline.lib.storage.object_store import RemoteArtifacts
from finetune_pipeline.lib.storage.state_files import StateFiles
from finetune_pipeline.lib.training.openai.config import OpenAIConfig
from finetune_pipeline.lib.training.openai.format_check import (
    ValidationReport,
    validate_dataset,
)

LEDGER = Path("openai") / "ledger.json"
RUNNING = ("validating_files", "queued", "running")
TERMINAL = ("succeeded", "failed", "cancelled")
EVENTS_PAGE = 100

log = logging.getLogger(__name__)

Log = Callable[[str], None]
# (level, message): level is the event's own, "info", "warn" or "error".
EventLog = Callable[[str, str], None]


class FineTuneError(RuntimeError):
    """A request to OpenAI failed; the message says which and never holds the key."""


class FineTuneJobFailed(FineTuneError):
    pass


class FineTuneJobCancelled(FineTuneError):
    pass


class FineTuneWaitTimeout(FineTuneError):
    pass


def redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def training_section(o: OpenAIConfig) -> dict[str, Any]:
    """What decides the trained model (and so its artifact key): not `enabled`, not polling."""
    return {k: getattr(o, k) for k in ("base_model", "suffix", "n_epochs", "batch_size", "learning_rate_multiplier",
                                       "seed", "token_limit", "min_examples")}


# --- the ledger: uploads by content hash, jobs by recipe key ----------------------------------

class Ledger:
    """A JSON file of what was sent to each endpoint, so retries neither upload nor create twice.

    An exclusive lock is held while a request that may create something is in
    flight, so two runs on the same inputs cannot both upload or both create.
    """

    def __init__(self, artifacts_root: Path, endpoint: str, remote: RemoteArtifacts | None = None):
        # With artifacts on object storage the bucket's copy is the record, so a retry on another
        # machine still finds the job; the lock then only covers this machine.
        self.files, self.endpoint = StateFiles(artifacts_root, remote), endpoint
        self.lock = Path(artifacts_root) / LEDGER.with_suffix(".lock")

    def _state(self) -> dict[str, Any]:
        return json.loads(self.files.read(str(LEDGER)) or "{}")

    @contextmanager
    def locked(self) -> Iterator[dict[str, Any]]:
        self.lock.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self._state()
            scope = state.setdefault(self.endpoint, {"files": {}, "jobs": {}})
            yield scope
            self.files.write(str(LEDGER), json.dumps(state, indent=2, sort_keys=True) + "\n")

    def read(self) -> dict[str, Any]:
        return self._state().get(self.endpoint, {"files": {}, "jobs": {}})


def upload_once(client: openai.OpenAI, path: Path, name: str, ledger: Ledger, log: Log) -> str:
    """The id of `path` on the endpoint: reused when its sha256 was uploaded before, else uploaded now."""
    sha = hash_file(path)
    with ledger.locked() as scope:
        known = scope["files"].get(sha)
        if known:
            try:
                remote = client.files.retrieve(known["id"])
                log(f"reusing upload {remote.id} for {name} (sha256 {sha[:12]}, same content as before)")
                return remote.id
            except openai.NotFoundError:
                log(f"upload {known['id']} for {name} is gone from the endpoint; uploading again")
        with open(path, "rb") as f:
            remote = client.files.create(file=(name, f), purpose="fine-tune")
        scope["files"][sha] = {"id": remote.id, "filename": name, "bytes": remote.bytes,
                               "created_at": remote.created_at}
        log(f"uploaded {name} as {remote.id} ({remote.bytes} bytes, sha256 {sha[:12]})")
        return remote.id


def start_or_resume_job(client: openai.OpenAI, *, key: str, o: OpenAIConfig, training_file: str,
                        validation_file: str | None, ledger: Ledger, run_id: str | None, log: Log):
    """The job for these inputs: the one already created (unless it failed or was cancelled), else a new one."""
    with ledger.locked() as scope:
        known = scope["jobs"].get(key)
        if known:
            job = client.fine_tuning.jobs.retrieve(known["id"])
            if job.status not in ("failed", "cancelled"):
                log(f"resuming job {job.id} ({job.status}), created for these same inputs by run {known.get('run_id')}")
                return job
            log(f"job {job.id} for these inputs ended {job.status}; creating a new one")
        hyperparameters = {"n_epochs": o.n_epochs, "batch_size": o.batch_size,
                           "learning_rate_multiplier": o.learning_rate_multiplier}
        extra = {"validation_file": validation_file} if validation_file else {}
        job = client.fine_tuning.jobs.create(
            model=o.base_model, training_file=training_file, suffix=o.suffix, seed=o.seed,
            method={"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
            metadata={"finetune_pipeline_recipe": key}, **extra)
        previous = [known["id"], *known.get("previous", [])] if known else []
        scope["jobs"][key] = {"id": job.id, "created_at": job.created_at, "run_id": run_id, "previous": previous}
        log(f"created fine-tuning job {job.id} on {o.base_model} ({job.status}), hyperparameters {hyperparameters}")
        return job


# --- waiting -------------------------------------------------------------------------------------

@dataclass
class EventStream:
    """Yields a job's events once each, oldest first (the API lists them newest first)."""

    client: openai.OpenAI
    job_id: str
    seen: set[str] = field(default_factory=set)
    events: list[dict[str, Any]] = field(default_factory=list)

    def poll(self) -> list[Any]:
        fresh, after = [], None
        while True:
            page = self.client.fine_tuning.jobs.list_events(
                self.job_id, limit=EVENTS_PAGE, **({"after": after} if after else {}))
            batch = list(page.data)
            new = [e for e in batch if e.id not in self.seen]
            fresh += new
            # Stop at the first page that reaches an event already seen.
            if len(new) < len(batch) or not page.has_more or not batch:
                break
            after = batch[-1].id
        fresh.reverse()
        for event in fresh:
            self.seen.add(event.id)
            self.events.append(event.model_dump(mode="json"))
        return fresh


def wait_for_job(client: openai.OpenAI, job, o: OpenAIConfig, *, log: Log, event_log: EventLog,
                 stream: EventStream, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
    """Poll until the job reaches a terminal status, with backoff; events go to `event_log` as they appear."""
    interval, deadline, last = o.poll_interval_s, clock() + o.max_wait_s, None
    while True:
        for event in stream.poll():
            event_log(event.level, f"[{job.id}] {event.message}")
        if job.status != last:
            log(f"job {job.id}: {job.status}")
            if job.status not in RUNNING + TERMINAL:
                log(f"job {job.id}: unknown status {job.status!r}, not terminal; still waiting")
            last = job.status
        if job.status in TERMINAL:
            return job
        if clock() >= deadline:
            raise FineTuneWaitTimeout(
                f"job {job.id} still {job.status} after openai.max_wait_s={o.max_wait_s:g}s; it keeps running, "
                "and a rerun with the same inputs resumes waiting for it")
        sleep(interval)
        interval = min(interval * o.poll_backoff, o.poll_max_interval_s)
        job = client.fine_tuning.jobs.retrieve(job.id)


def cancel_quietly(client: openai.OpenAI, job_id: str, log: Log) -> None:
    try:
        job = client.fine_tuning.jobs.cancel(job_id)
        log(f"cancelled job {job_id} because the run was interrupted (status now {job.status})")
    except Exception as e:  # best effort: the interruption is what must propagate
        log(f"could not cancel job {job_id}: {type(e).__name__}")


# --- one job, start to finish ----------------------------------------------------------------------

@dataclass
class FinishedJob:
    job: Any  # openai's FineTuningJob, status succeeded
    events: list[dict[str, Any]]
    training_file: str
    validation_file: str | None


def validate(o: OpenAIConfig, dataset_dir: Path) -> ValidationReport:
    """OpenAI's format rules on train/val, before anything is sent."""
    return validate_dataset(dataset_dir / "train.jsonl", dataset_dir / "val.jsonl", model=o.base_model,
                            token_limit=o.token_limit, min_examples=o.min_examples)


def run_job(client: openai.OpenAI, o: OpenAIConfig, *, dataset_dir: Path, dataset_key: str, key: str,
            ledger: Ledger, with_validation: bool, run_id: str | None,
            sleep: Callable[[float], None] = time.sleep) -> FinishedJob:
    """Upload (once), create or resume the job for recipe `key`, wait until it succeeds; raise if it does not.

    Every message that reaches the log or an exception is redacted of the client's key: nothing the
    server says can leak it.
    """
    secret = client.api_key
    say = _Redacted(secret)
    try:
        train_id = upload_once(client, dataset_dir / "train.jsonl", f"{dataset_key}-train.jsonl", ledger, say.info)
        val_id = None
        if with_validation:
            val_id = upload_once(client, dataset_dir / "val.jsonl", f"{dataset_key}-val.jsonl", ledger, say.info)
        job = start_or_resume_job(client, key=key, o=o, training_file=train_id, validation_file=val_id,
                                  ledger=ledger, run_id=run_id, log=say.info)
        stream = EventStream(client, job.id)
        try:
            job = wait_for_job(client, job, o, log=say.info, event_log=say.event, stream=stream, sleep=sleep)
        except BaseException as e:
            if not isinstance(e, Exception):  # run terminated or Ctrl-C: stop paying for an unwatched job
                cancel_quietly(client, job.id, say.info)
            raise
    except openai.OpenAIError as e:
        message = redact(f"OpenAI request failed: {type(e).__name__}: {e}", secret)
        if secret and secret in _chain_text(e):
            raise FineTuneError(message) from None  # the original would carry the key along
        raise FineTuneError(message) from e

    if job.status == "failed":
        err = job.error
        detail = f"{err.message} (code {err.code}, param {err.param})" if err else "no error message given"
        raise FineTuneJobFailed(redact(f"OpenAI fine-tuning job {job.id} failed: {detail}", secret))
    if job.status == "cancelled":
        raise FineTuneJobCancelled(f"OpenAI fine-tuning job {job.id} was cancelled before it finished")
    events = [json.loads(redact(json.dumps(e), secret)) for e in stream.events]
    return FinishedJob(job, events, train_id, val_id)


class _Redacted:
    """The module's log, with the key taken out of every message (defence in depth)."""

    LEVELS = {"info": logging.INFO, "warn": logging.WARNING, "warning": logging.WARNING, "error": logging.ERROR}

    def __init__(self, secret: str | None):
        self.secret = secret

    def info(self, message: str) -> None:
        log.info(redact(message, self.secret))

    def event(self, level: str, message: str) -> None:
        """A job event, logged at the event's own level."""
        log.log(self.LEVELS.get(level, logging.INFO), redact(message, self.secret))


def _chain_text(e: BaseException | None) -> str:
    parts, seen = [], set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        parts.append(f"{e!s} {e!r} {getattr(e, 'body', '')}")
        e = e.__cause__ or e.__context__
    return " ".join(parts)


def hyperparameters(job) -> dict[str, Any]:
    """What the job actually used ("auto" resolved), from `method` where present."""
    method = getattr(job, "method", None)
    if method is not None and method.supervised is not None and method.supervised.hyperparameters is not None:
        return method.supervised.hyperparameters.model_dump(mode="json", exclude_none=True)
    return job.hyperparameters.model_dump(mode="json", exclude_none=True) if job.hyperparameters else {}

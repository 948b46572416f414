"""The OpenAI fine-tuning stage: the same training_dataset in, an `ft:` model version out (it costs money).

Recipe: the dataset, the training part of the `openai` section and the
endpoint. Build: check the files against OpenAI's rules (nothing is sent
before that passes), run the job (`training/openai/jobs.py`), keep the job,
its events and the validation report; the `ft:` model is then registered as a
model version. An unchanged recipe is a cache hit that sends nothing.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Callable

import openai

from finetune_pipeline.lib.config import PipelineConfig
from finetune_pipeline.lib.stages.common import artifact_key, build_artifact, registry, remote
from finetune_pipeline.lib.storage.artifacts import ArtifactRef, write_json
from finetune_pipeline.lib.training.openai.jobs import Ledger, hyperparameters, run_job, training_section, validate
from finetune_pipeline.lib.versions.costs import openai_training_cost
from finetune_pipeline.lib.versions.kinds.openai import version_key
from finetune_pipeline.lib.versions.version import ArtifactAddress

log = logging.getLogger(__name__)
ASSET = "openai_fine_tuned_model"


def fine_tune(cfg: PipelineConfig, dataset: ArtifactRef, client: openai.OpenAI, run_id: str | None = None,
              sleep: Callable[[float], None] = time.sleep) -> ArtifactRef:
    """Train `dataset` on OpenAI and register the result; reuses the artifact when the recipe is unchanged."""
    o = cfg.openai
    endpoint = str(client.base_url).rstrip("/")
    recipe = {"dataset": dataset.key, "openai": training_section(o), "endpoint": endpoint}

    def build(out: Path) -> dict:
        # Everything that can fail without a request fails here, before the first one.
        openai_training_cost(o.base_model, 0, cfg.costs)  # a price must exist to record the cost
        report = validate(o, dataset.dir).raise_for_errors()
        planned_tokens = report.billing_tokens(o.n_epochs)
        log.info("%s (tokens by %s); about %d billed tokens, ~$%.4f", report.describe(), report.tokenizer,
                 planned_tokens, openai_training_cost(o.base_model, planned_tokens, cfg.costs))
        ledger = Ledger(cfg.artifacts_dir, endpoint, remote(cfg))
        done = run_job(client, o, dataset_dir=dataset.dir, dataset_key=dataset.key,
                       key=artifact_key(ASSET, recipe), ledger=ledger, with_validation=len(report.files) > 1,
                       run_id=run_id, sleep=sleep)
        job, trained_tokens = done.job, done.job.trained_tokens or 0
        write_json(out / "job.json", job.model_dump(mode="json"))
        with open(out / "events.jsonl", "w") as f:
            for event in done.events:
                f.write(json.dumps(event) + "\n")
        write_json(out / "validation.json", report.to_json())
        metrics = [e["data"] for e in done.events if e.get("type") == "metrics" and e.get("data")]
        cost = round(openai_training_cost(o.base_model, trained_tokens, cfg.costs), 6)
        log.info("%s: %d trained tokens, estimated $%.4f", job.fine_tuned_model, trained_tokens, cost)
        return dict(
            version_key=version_key(o.suffix, job.id), fine_tuned_model=job.fine_tuned_model, job_id=job.id,
            base_model=job.model, status=job.status, training_file=done.training_file,
            validation_file=done.validation_file, train_rows=report.files[0].examples,
            trained_tokens=trained_tokens, planned_tokens=planned_tokens, estimated_cost_usd=cost,
            hyperparameters=hyperparameters(job), events=len(done.events),
            final_metrics=metrics[-1] if metrics else {}, tokenizer=report.tokenizer)

    ref = build_artifact(cfg, ASSET, build, recipe=recipe, inputs=[dataset],
                         config={**recipe["openai"], "endpoint": endpoint},
                         unchanged=f"dataset {dataset.key} was already fine-tuned with this config, nothing sent "
                                   "to OpenAI", run_id=run_id)
    info = ref.info
    registry(cfg).register(info["version_key"], "openai", remote_id=info["fine_tuned_model"],
                           artifact=ArtifactAddress(asset=ref.asset, key=ref.key),
                           info={k: info[k] for k in ("base_model", "job_id", "trained_tokens", "estimated_cost_usd")})
    return ref

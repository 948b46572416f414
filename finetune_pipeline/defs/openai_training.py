"""OpenAI fine-tuning: the second trainer, in its own group and job because it costs money.

The asset skips unless `openai.enabled: true` in the config, so "Materialize
all" or a schedule that happens to select it never spends anything by default.
The key is read from $OPENAI_API_KEY only when the asset actually calls OpenAI,
so runs that never reach it do not need the variable, and it is never part of
any run config, log line or metadata.
"""

import os
from typing import Optional

import dagster as dg
import openai
from pydantic import Field

from finetune_pipeline.defs.logs import core_logs
from finetune_pipeline.defs.settings import (
    CONFIG_ENV,
    PipelineSettings,
    artifact_output,
)
from finetune_pipeline.defs.training import MODEL_VERSIONS
from finetune_pipeline.lib.config import DEFAULT_CONFIG
from finetune_pipeline.lib.storage.artifacts import ArtifactRef
from finetune_pipeline.lib.stages import CODE_VERSIONS
from finetune_pipeline.lib.stages.openai import fine_tune

OPENAI_API_KEY = dg.EnvVar("OPENAI_API_KEY")


class OpenAIClientResource(dg.ConfigurableResource):
    """An `openai.OpenAI` client. The client itself retries 429, 5xx and connection errors with backoff."""

    api_key: Optional[str] = Field(
        default=None, description="Leave unset: the key is read from $OPENAI_API_KEY when a run needs it. "
                                  "Set it only as {env: OTHER_VAR}, never as a literal.")
    base_url: Optional[str] = Field(
        default=None, description="An OpenAI-compatible endpoint; unset: $OPENAI_BASE_URL, else api.openai.com/v1.")
    max_retries: int = Field(default=5, description="Retries per request on 429, 5xx and connection errors.")
    timeout_s: float = Field(default=120.0, description="Per-request timeout; uploads of large files need minutes.")

    def get_client(self) -> openai.OpenAI:
        key = self.api_key or OPENAI_API_KEY.get_value()
        if not key:
            raise dg.Failure(f"no OpenAI API key: set the environment variable {OPENAI_API_KEY.env_var_name}")
        return openai.OpenAI(api_key=key, base_url=self.base_url or None, max_retries=self.max_retries,
                             timeout=self.timeout_s)


@dg.asset(
    group_name="openai", kinds={"openai"}, code_version=CODE_VERSIONS["openai_fine_tuned_model"], output_required=False,
    description="An OpenAI fine-tuned model (ft:...) trained on training_dataset, registered as a model version. "
                "Skips unless openai.enabled is true: it costs money.",
)
def openai_fine_tuned_model(context: dg.AssetExecutionContext, settings: PipelineSettings,
                            openai_client: OpenAIClientResource, training_dataset: ArtifactRef):
    cfg = settings.load()
    if not cfg.openai.enabled:
        source = settings.config_path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG
        context.log.warning(f"skipped: openai.enabled is false in {source}; "
                            "set it to true to fine-tune on OpenAI. Nothing was sent.")
        return
    with core_logs(context):  # the job's events reach the log at their own level (warn, error)
        ref = fine_tune(cfg, training_dataset, openai_client.get_client(), context.run_id)
    info = ref.info
    context.instance.add_dynamic_partitions(MODEL_VERSIONS.name, [info["version_key"]])
    yield artifact_output(
        ref,
        version_key=info["version_key"], fine_tuned_model=info["fine_tuned_model"], job_id=info["job_id"],
        base_model=info["base_model"], train_rows=info["train_rows"], trained_tokens=info["trained_tokens"],
        estimated_cost_usd=info["estimated_cost_usd"], planned_tokens=info["planned_tokens"],
        hyperparameters=dg.MetadataValue.json(info["hyperparameters"]),
        final_metrics=dg.MetadataValue.json(info["final_metrics"]), events=info["events"],
        training_file=info["training_file"], validation_file=info["validation_file"] or "",
    )


openai_fine_tune = dg.define_asset_job(
    "openai_fine_tune",
    # The data assets come along (cache hits when unchanged) so their blocking checks guard this too.
    selection=dg.AssetSelection.assets(openai_fine_tuned_model).upstream(),
    description="Raw files -> dataset -> OpenAI fine-tuning job; registers the ft: model as a version. "
                "Needs openai.enabled: true and $OPENAI_API_KEY.",
)

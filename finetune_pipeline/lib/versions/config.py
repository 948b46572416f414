"""The sections of the run config about model versions: promotion, serving, the retraining schedule, costs."""

from __future__ import annotations

import zoneinfo
from typing import Annotated, Literal

from pydantic import Field, field_validator

from finetune_pipeline.lib.evaluation import metrics
from finetune_pipeline.lib.section import Section

Price = Annotated[float, Field(ge=0)]


def _metric_choices() -> str:
    """What the metric registry reports, for messages: exact names, and families as prefix/<name>."""
    names = [n for m in metrics.METRICS for n in m.names] + [f"{m.prefix}<name>" for m in metrics.METRICS if m.prefix]
    return ", ".join(names)


class PromotionConfig(Section):
    """Champion/challenger promotion, and what the leaderboard ranks by."""

    primary_metric: str = Field(
        "exact_match", description="The eval report's metric that ranks versions: exact_match, valid_json, "
                                   "accuracy/<field>, classification/<metric> or constrained/<metric>.")
    # Noise on a small test split must not flip the champion back and forth.
    margin: float = Field(0.01, ge=0, description="A challenger must beat the champion by more than this "
                                                  "(absolute).")
    confusion_field: str = Field("", description="The field whose confusion matrix the leaderboard draws; empty = "
                                                 "the field of primary_metric accuracy/<field>, else the first field.")

    @field_validator("primary_metric")
    @classmethod
    def _reported(cls, value: str) -> str:
        # Checked against the metric registry, so a metric added there is accepted here.
        if not metrics.known_metric(value):
            raise ValueError(f"must be a metric the eval reports: {_metric_choices()} (got another string)")
        return value


class ServingConfig(Section):
    """What `serving_spec` writes for the champion."""

    mode: Literal["merged", "lora"] = Field(
        "merged", description="merged: serve the merged folder; lora: the base model with the adapter as a LoRA "
                              "module (one server, many adapters, small artifacts).")
    host: str = Field("0.0.0.0", description="The address the server listens on.")
    port: int = Field(8000, ge=1, le=65535, description="The port the server listens on.")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one vLLM server shards the model over "
                                                          "(--tensor-parallel-size); 1 on a CPU.")
    vllm_args: list[str] = Field([], description="Appended to the vllm serve command, e.g. "
                                                 "[--max-loras, \"4\"].")


class ScheduleConfig(Section):
    """Nightly retraining and the raw-folder sensor."""

    cron: str = Field("0 2 * * *", description="When the retraining schedule ticks (5 fields: minute hour day "
                                               "month weekday).")
    # Always explicit: a bare cron would follow the daemon host's clock.
    timezone: str = Field("UTC", description="The IANA time zone of cron, e.g. UTC or Europe/Berlin.")
    enabled: bool = Field(True, description="The schedule runs from when the code location loads.")
    # Off by default: raw folders often change file by file during an upload.
    raw_files_sensor: bool = Field(False, description="Also request a run when files under data.raw_dir change.")
    sensor_interval_s: int = Field(300, gt=0, description="Seconds between two looks of the raw-folder sensor.")

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError(f"must have 5 fields (minute hour day month weekday); it has {len(value.split())}")
        return value

    @field_validator("timezone")
    @classmethod
    def _iana(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. UTC, Europe/Berlin)") from None
        return value


class CostConfig(Section):
    """Price table for the estimated cost of each model version (USD): training, and inference per 1,000 requests.

    Defaults are list prices at the time of writing; override them with your
    own contract prices. Training and local evals are priced by the device they
    recorded (a CPU as `cpu`, a GPU by its name: see versions/costs.py and
    docs/model-versions.md#costs); a GPU without a price has an unknown cost.
    """

    device: str = Field("cpu", description="Fallback only: the key of hourly_usd that prices a training whose "
                                           "lineage records no device (written before devices were recorded).")
    hourly_usd: dict[str, Price] = Field(
        {"cpu": 0.10, "a10g": 1.21, "l4": 0.80, "a100-80gb": 3.67, "h100": 4.50},
        description="USD per device-hour, by price key: cpu, a GPU model (h100, l4, a10g), model-memory "
                    "(a100-80gb) or a whole GPU name slugged (nvidia-h100-80gb-hbm3).")
    endpoint_device: str = Field(
        "", description="The hardware behind eval.openai.base_url when a local version is evaluated through the "
                        "openai backend (cpu, a price key or a GPU name), for its inference cost; empty = unknown.")
    openai_training_per_1m_tokens: dict[str, Price] = Field(
        {"gpt-4o-mini-2024-07-18": 3.00, "gpt-4.1-mini-2025-04-14": 5.00, "gpt-4o-2024-08-06": 25.00,
         "gpt-4.1-2025-04-14": 25.00, "gpt-3.5-turbo-0125": 8.00},
        description="USD per 1M trained tokens of OpenAI fine-tuning, by base model.")

"""The sections of the run config about model versions: promotion, serving, the retraining schedule, costs."""

from __future__ import annotations

import zoneinfo
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from finetune_pipeline.lib.evaluation import metrics
from finetune_pipeline.lib.section import Section, rules

Price = Annotated[float, Field(ge=0)]


class TokenPrice(Section):
    """USD per 1M tokens sent (input) and generated (output)."""

    input: Price
    output: Price


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
    # On 71 test rows one row is 0.014: a raw margin cannot tell a better model from noise.
    confidence: float = Field(0.95, ge=0, lt=1, description="A challenger is promoted only if a paired test on the "
                                                            "eval rows (McNemar, or a permutation test) says it beats "
                                                            "the champion with this confidence (p < 1 - confidence); "
                                                            "0 = no test, the margin alone.")
    max_forgetting: float | None = Field(
        None, ge=0, description="Block a challenger whose forgetting_metric on the general suite worsened by more "
                                "than this from its base model (nats per token); unset = not guarded.")
    forgetting_metric: Literal["general/drift", "general/nll_delta"] = Field(
        "general/drift", description="The general-suite measure max_forgetting guards: drift (how much less likely "
                                     "the base model's own answers became) or nll_delta (reference answers).")

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
    api_per_1m_tokens: dict[str, TokenPrice] = Field(
        {"gpt-4o-mini": {"input": 0.15, "output": 0.60}, "gpt-4.1-mini": {"input": 0.40, "output": 1.60},
         "gpt-4.1-nano": {"input": 0.10, "output": 0.40}, "gpt-4o": {"input": 2.50, "output": 10.00},
         "gpt-4.1": {"input": 2.00, "output": 8.00},
         "ft:gpt-4o-mini": {"input": 0.30, "output": 1.20}, "ft:gpt-4.1-mini": {"input": 0.80, "output": 3.20},
         "ft:gpt-4o": {"input": 3.75, "output": 15.00}, "ft:gpt-4.1": {"input": 3.00, "output": 12.00}},
        validate_default=True,
        description="USD per 1M input/output tokens of a model answered by an API (an api_model baseline, an OpenAI "
                    "fine-tuned version as ft:<base>), for its cost per 1,000 requests from the eval's token counts.")
    openai_training_per_1m_tokens: dict[str, Price] = Field(
        {"gpt-4o-mini-2024-07-18": 3.00, "gpt-4.1-mini-2025-04-14": 5.00, "gpt-4o-2024-08-06": 25.00,
         "gpt-4.1-2025-04-14": 25.00, "gpt-3.5-turbo-0125": 8.00},
        description="USD per 1M trained tokens of OpenAI fine-tuning, by base model.")


class BaselineConfig(Section):
    """A prompting baseline: a model as it is, with a prompt recipe, registered as a model version (kind prompted).

    k-shot examples are drawn from the training split only (never val or test), with a fixed seed, and placed
    in the prompt as earlier user/assistant turns; the rows shown are in the version's lineage.
    """

    shots: int = Field(0, ge=0, le=64, description="Training examples shown in the prompt as earlier turns.")
    draw: Literal["per_class", "random"] = Field(
        "per_class", description="per_class: one example of each class in turn (classes in a seeded order) until "
                                 "`shots`; random: a seeded sample of the training split.")
    class_field: str = Field("", description="The JSON output field per_class draws by; empty = "
                                             "eval.classification.field, else the first field of the outputs.")
    constrained: bool | Literal["json", "labels"] = Field(
        False, description="Structured decoding of the answer: json (or true) = valid JSON of the task's shape (each "
                           "field one of its values in the training split); labels = one of the label set "
                           "(eval.classification); false = free generation.")
    model: str = Field("", description="The registered model version to prompt; empty = the base model "
                                       "(model.base_model).")
    api_model: str = Field("", description="An API model without fine-tuning (e.g. gpt-4o-mini), answered through "
                                           "eval.openai's endpoint instead of a local model. It costs money: no "
                                           "config lists one by default.")
    seed: int = Field(42, ge=0, description="Seed of the example draw.")

    @model_validator(mode="after")
    def _rules(self) -> BaselineConfig:
        rules((not (self.model and self.api_model), "set `model` or `api_model`, not both"),
              (not (self.api_model and self.constrained),
               "`constrained` needs a local model (the transformers or vllm backend): an api_model cannot be "
               "constrained here"))
        return self

    @property
    def constraint(self) -> str:
        """"json", "labels" or "" (free generation)."""
        return "json" if self.constrained is True else (self.constrained or "")

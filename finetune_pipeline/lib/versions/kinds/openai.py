"""`openai`: a model fine-tuned on OpenAI, evaluated and served there by its remote id (`ft:...`)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from finetune_pipeline.lib.versions.costs import UnknownPriceError, VersionCost, openai_training_cost
from finetune_pipeline.lib.versions.kinds.kind import VersionKind
from finetune_pipeline.lib.versions.serving import ServingSpec
from finetune_pipeline.lib.versions.version import check_key

if TYPE_CHECKING:
    from finetune_pipeline.lib.storage.artifacts import ArtifactStore
    from finetune_pipeline.lib.versions.config import CostConfig, ServingConfig
    from finetune_pipeline.lib.versions.version import ModelVersion


def version_key(suffix: str, job_id: str) -> str:
    """A safe partition key for an `ft:...:suffix:id` model: the id holds ':' so it stays the remote id."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", suffix).strip("-._")[:40] or "model"
    tail = re.sub(r"[^A-Za-z0-9]", "", job_id.removeprefix("ftjob-"))[-10:]
    return check_key(f"openai-{slug}-{tail}")


class OpenAIKind(VersionKind):
    name = "openai"
    fine_tuned = True
    remote = True

    def check(self, version: "ModelVersion") -> None:
        if not version.remote_id:
            raise ValueError(f"model version {version.key!r}: an OpenAI version needs its remote model id")

    def training_cost(self, version: "ModelVersion", store: "ArtifactStore", costs: "CostConfig") -> VersionCost:
        info = version.info
        tokens = info.get("trained_tokens")
        try:
            cost = openai_training_cost(info.get("base_model", ""), int(tokens), costs) if tokens is not None else None
        except UnknownPriceError:
            cost = info.get("estimated_cost_usd")  # what the job recorded when it ran
        return VersionCost(train_seconds=info.get("train_seconds"), tokens_trained=tokens, device="openai",
                           device_hours=None, cost_usd=None if cost is None else round(cost, 6))

    def serving_spec(self, version: "ModelVersion", store: "ArtifactStore", serving: "ServingConfig") -> ServingSpec:
        return ServingSpec(version=version.key, kind=self.name, model=version.remote_id,
                           note="served by OpenAI: call the chat completions API with model=<remote id>")


KIND = OpenAIKind()

"""`lora_merged`: a LoRA adapter trained here, merged into its base model (the `merged_model` artifact)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from finetune_pipeline.lib.models.base_models import spec_slug
from finetune_pipeline.lib.versions.costs import VersionCost, training_cost
from finetune_pipeline.lib.versions.kinds.kind import LocalWeightsKind
from finetune_pipeline.lib.versions.retraining import TrainedFrom, trained_from_merged
from finetune_pipeline.lib.versions.serving import ServingSpec, lora_serving_spec
from finetune_pipeline.lib.versions.version import base_key

if TYPE_CHECKING:
    from finetune_pipeline.lib.storage.artifacts import ArtifactStore
    from finetune_pipeline.lib.versions.config import CostConfig, ServingConfig
    from finetune_pipeline.lib.versions.version import ModelVersion


def input_of(lineage: dict[str, Any] | None, asset: str) -> dict[str, Any] | None:
    """The input of `asset` named in a lineage, if any."""
    return next((i for i in (lineage or {}).get("inputs", []) if i.get("asset") == asset and i.get("key")), None)


class LoraMergedKind(LocalWeightsKind):
    name = "lora_merged"
    fine_tuned = True

    def check(self, version: "ModelVersion") -> None:
        if not version.weights or version.artifact is None:
            raise ValueError(f"model version {version.key!r}: a lora_merged version needs the path of its weights "
                             "and its merged_model artifact")

    def adapter_info(self, version: "ModelVersion", store: "ArtifactStore") -> dict[str, Any]:
        """The lora_adapter's lineage info (train_seconds, tokens_seen, device) behind the merged model."""
        adapter = input_of(version.lineage(store), "lora_adapter")
        lineage = store.lineage("lora_adapter", adapter["key"]) if adapter else None
        return (lineage or {}).get("info", {})

    def base_version(self, version: "ModelVersion") -> str | None:
        """The base model version it was trained from: `base-<slug of info.base>`, as base_model registers it."""
        return base_key(spec_slug(version.info["base"])) if version.info.get("base") else None

    def training_cost(self, version: "ModelVersion", store: "ArtifactStore", costs: "CostConfig") -> VersionCost:
        return training_cost(self.adapter_info(version, store), costs)

    def trained_from(self, version: "ModelVersion", store: "ArtifactStore") -> TrainedFrom | None:
        return trained_from_merged(version, store)

    def serving_spec(self, version: "ModelVersion", store: "ArtifactStore", serving: "ServingConfig") -> ServingSpec:
        if serving.mode == "lora":  # one server, the base model plus this adapter as a LoRA module
            return lora_serving_spec(version, store, serving)
        return super().serving_spec(version, store, serving)

    def artifacts_to_serve(self, version: "ModelVersion", store: "ArtifactStore") -> list[tuple[str, str]]:
        # `serving.mode: lora` serves the base model with the adapter: both are needed too.
        lineage = version.lineage(store)
        extra = [(i["asset"], i["key"]) for asset in ("base_model", "lora_adapter") if (i := input_of(lineage, asset))]
        return super().artifacts_to_serve(version, store) + extra


KIND = LoraMergedKind()

"""`full`: a full fine-tune trained here (`train.method: full`). Its artifact is the `lora_adapter` artifact itself.

A full fine-tune saves a whole model (model.safetensors, config, tokenizer)
where a LoRA training saves an adapter, so there is nothing to merge: the
version points at the training artifact's folder and no weights are copied.
It is evaluated and served like a merged LoRA model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from finetune_pipeline.lib.models.base_models import spec_slug
from finetune_pipeline.lib.versions.costs import VersionCost, training_cost
from finetune_pipeline.lib.versions.kinds.kind import LocalWeightsKind
from finetune_pipeline.lib.versions.retraining import TrainedFrom, trained_from_training
from finetune_pipeline.lib.versions.version import base_key

if TYPE_CHECKING:
    from finetune_pipeline.lib.storage.artifacts import ArtifactStore
    from finetune_pipeline.lib.versions.config import CostConfig, ServingConfig
    from finetune_pipeline.lib.versions.serving import ServingSpec
    from finetune_pipeline.lib.versions.version import ModelVersion


class FullKind(LocalWeightsKind):
    name = "full"
    fine_tuned = True

    def check(self, version: "ModelVersion") -> None:
        if not version.weights or version.artifact is None:
            raise ValueError(f"model version {version.key!r}: a full version needs the path of its weights "
                             "and its lora_adapter (training) artifact")

    def base_version(self, version: "ModelVersion") -> str | None:
        """The base model version it was trained from: `base-<slug of info.base>`, as base_model registers it."""
        return base_key(spec_slug(version.info["base"])) if version.info.get("base") else None

    def training_cost(self, version: "ModelVersion", store: "ArtifactStore", costs: "CostConfig") -> VersionCost:
        return training_cost((version.lineage(store) or {}).get("info", {}), costs)

    def trained_from(self, version: "ModelVersion", store: "ArtifactStore") -> TrainedFrom | None:
        """lora_adapter <- (training_dataset <- raw_examples, base_model), read from their lineage."""
        trained = version.lineage(store)
        return None if trained is None else trained_from_training(version, store, trained)

    def serving_spec(self, version: "ModelVersion", store: "ArtifactStore", serving: "ServingConfig") -> "ServingSpec":
        spec = super().serving_spec(version, store, serving)
        if serving.mode == "lora":  # there is no adapter to serve as a LoRA module
            spec.note = "serving.mode lora does not apply to a full fine-tune: it is served as a whole model"
        return spec


KIND = FullKind()

"""The behaviour every kind of model version provides, and the default for versions with local weights."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from finetune_pipeline.lib.versions.costs import VersionCost
from finetune_pipeline.lib.versions.serving import ServingSpec, local_serving_spec

if TYPE_CHECKING:
    from finetune_pipeline.lib.evaluation.prompt_recipe import PromptRecipe
    from finetune_pipeline.lib.storage.artifacts import ArtifactStore
    from finetune_pipeline.lib.versions.config import CostConfig, ServingConfig
    from finetune_pipeline.lib.versions.retraining import TrainedFrom
    from finetune_pipeline.lib.versions.version import ModelVersion


class VersionKind:
    name: ClassVar[str]
    remote: ClassVar[bool] = False  # evaluated through an endpoint by remote_id, not from local weights
    fine_tuned: ClassVar[bool] = False  # trained on the task (the verdict weighs these against prompting)

    def check(self, version: "ModelVersion") -> None:
        """Raise ValueError naming what a version of this kind lacks."""

    def training_cost(self, version: "ModelVersion", store: "ArtifactStore", costs: "CostConfig") -> VersionCost:
        return VersionCost.free()

    def trained_from(self, version: "ModelVersion", store: "ArtifactStore") -> "TrainedFrom | None":
        return None

    def serving_spec(self, version: "ModelVersion", store: "ArtifactStore", serving: "ServingConfig") -> ServingSpec:
        raise NotImplementedError

    def artifacts_to_serve(self, version: "ModelVersion", store: "ArtifactStore") -> list[tuple[str, str]]:
        """(asset, key) of every artifact a serving host needs for this version (`finetune-pipeline pull`)."""
        return []

    def answered_by(self, version: "ModelVersion") -> str | None:
        """The key of another version whose weights answer for this one (a prompted baseline's model); None: itself."""
        return None

    def prompt_recipe(self, version: "ModelVersion", store: "ArtifactStore") -> "PromptRecipe | None":
        """What this version adds to every request (k-shot turns, a constraint); None: the request as it is."""
        return None

    def base_version(self, version: "ModelVersion") -> str | None:
        """The key of the base model version this one was made from, which forgetting is measured against;
        None where there is none here (an API model)."""
        return None


class LocalWeightsKind(VersionKind):
    """A model whose weights are a local folder: vLLM (GPU) or `transformers serve` (CPU) serve it."""

    def check(self, version: "ModelVersion") -> None:
        if not version.weights:
            raise ValueError(f"model version {version.key!r}: a {self.name} version needs the path of its weights")

    def serving_spec(self, version: "ModelVersion", store: "ArtifactStore", serving: "ServingConfig") -> ServingSpec:
        return local_serving_spec(version, version.weights_dir(store), serving)

    def artifacts_to_serve(self, version: "ModelVersion", store: "ArtifactStore") -> list[tuple[str, str]]:
        return [(version.artifact.asset, version.artifact.key)] if version.artifact else []

"""`prompted`: a model as it is, with a prompt recipe (k-shot turns, a decoding constraint): a prompting baseline.

Nothing is trained. Its artifact is the `prompt_recipe` artifact (prompt.json: the training rows shown and the
answers allowed). Its weights are those of the version it prompts (`info.model`, answered through that
version's weights), or an API model answers it through eval.openai's endpoint (`remote_id`, e.g. gpt-4o-mini).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from finetune_pipeline.lib.evaluation.prompt_recipe import PromptRecipe
from finetune_pipeline.lib.versions.kinds.kind import VersionKind
from finetune_pipeline.lib.versions.serving import ServingSpec

if TYPE_CHECKING:
    from finetune_pipeline.lib.storage.artifacts import ArtifactStore
    from finetune_pipeline.lib.versions.config import ServingConfig
    from finetune_pipeline.lib.versions.version import ModelVersion


class PromptedKind(VersionKind):
    name = "prompted"

    def check(self, version: "ModelVersion") -> None:
        if version.artifact is None or not (version.info.get("model") or version.remote_id):
            raise ValueError(f"model version {version.key!r}: a prompted version needs its prompt_recipe artifact and "
                             "the version it prompts (info.model) or an API model (remote_id)")

    def answered_by(self, version: "ModelVersion") -> str | None:
        return version.info.get("model") or None

    def prompt_recipe(self, version: "ModelVersion", store: "ArtifactStore") -> PromptRecipe | None:
        return PromptRecipe.load(store.ensure_local(version.artifact.asset, version.artifact.key))

    def serving_spec(self, version: "ModelVersion", store: "ArtifactStore", serving: "ServingConfig") -> ServingSpec:
        # Only the API case reaches here: the stage serves a local model's prompted version through its model.
        return ServingSpec(version=version.key, kind=self.name, model=version.remote_id,
                           note=f"the API model {version.remote_id}, called with the prompt recipe's shots before "
                                "each user turn (prompt.json in its prompt_recipe artifact)")


KIND = PromptedKind()

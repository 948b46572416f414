"""The whole run config: every package's section, where artifacts live, and paths resolved against the file."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from finetune_pipeline.lib import PROJECT_ROOT
from finetune_pipeline.lib.data.config import DataConfig, local_folder
from finetune_pipeline.lib.evaluation.config import EvalConfig
from finetune_pipeline.lib.models.config import ModelConfig
from finetune_pipeline.lib.section import Section, rules
from finetune_pipeline.lib.sweeps.config import SweepConfig
from finetune_pipeline.lib.sweeps.points import SweepPoint, expand
from finetune_pipeline.lib.training.config import TrainConfig
from finetune_pipeline.lib.training.openai.config import OpenAIConfig
from finetune_pipeline.lib.versions.config import (
    BaselineConfig,
    CostConfig,
    PromotionConfig,
    ScheduleConfig,
    ServingConfig,
)

# Option names that would put a credential into config, lineage and ArtifactRefs.
_CREDENTIAL_OPTION = re.compile(r"key|secret|token|password|credential|session", re.IGNORECASE)


def _flat_keys(d: dict[str, Any]) -> list[str]:
    return [k2 for k, v in d.items() for k2 in ([str(k)] + (_flat_keys(v) if isinstance(v, dict) else []))]


class PipelineConfig(Section):
    """The run config of finetune_pipeline: one YAML file holds everything a run does.

    Relative paths resolve against the config file's own folder, never the current
    directory, so one file works from the CLI, the Dagster UI and the tests.
    """

    data: DataConfig = Field(default_factory=DataConfig, description="Raw data, row mapping, cleaning and splits.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The base model.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Fine-tuning of the base model.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation of every model version.")
    baselines: list[BaselineConfig] = Field(
        [], description="Prompting baselines registered as model versions (kind prompted), e.g. [{shots: 5}, "
                        "{shots: 5, constrained: true}]; the base model zero-shot is always a version.")
    costs: CostConfig = Field(default_factory=CostConfig, description="Prices for each version's estimated cost.")
    openai: OpenAIConfig = Field(default_factory=OpenAIConfig, description="OpenAI fine-tuning, the second trainer.")
    promotion: PromotionConfig = Field(default_factory=PromotionConfig,
                                       description="Champion/challenger promotion and the leaderboard's ranking.")
    serving: ServingConfig = Field(default_factory=ServingConfig, description="How the champion is served.")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig,
                                     description="Nightly retraining and the raw-folder sensor.")
    sweep: SweepConfig = Field(default_factory=SweepConfig,
                               description="A recipe sweep: train settings to try, each a model version; the winner "
                                           "is chosen on the val split only (docs/sweeps.md).")
    artifacts_root: str = Field(
        "data/artifacts", min_length=1,
        description="Where content-addressed artifacts live: a folder, or an fsspec URL (s3://bucket/prefix, gs://, "
                    "az://) whose working copy is kept under artifacts_mirror.")
    # Lineage records these paths, so every pod of one deployment should resolve it to the same folder.
    artifacts_mirror: str = Field("data/artifacts_mirror", description="With a URL artifacts_root: the folder of "
                                                                       "this machine's copy.")
    # The backend reads credentials from the environment (AWS_ACCESS_KEY_ID, GOOGLE_APPLICATION_CREDENTIALS...).
    artifacts_storage_options: dict[str, Any] = Field(
        {}, description="fsspec options of a URL artifacts_root (endpoint_url, region...); never credentials.")
    model_cache: str = Field("data/model_cache", description="Where converted base models (GGUF -> safetensors) "
                                                             "are cached; a local folder.")
    # Set by the loader to the config file's folder; not something a file says about itself.
    base_dir: SkipJsonSchema[str] = Field(str(PROJECT_ROOT), description="Relative paths resolve against this "
                                                                         "folder (the config file's).")

    @field_validator("model_cache", "artifacts_mirror")
    @classmethod
    def _local(cls, value: str) -> str:
        # Hugging Face reads the model cache in place, and the mirror is the local copy: folders both.
        return local_folder(value)

    @field_validator("artifacts_storage_options")
    @classmethod
    def _no_credentials(cls, options: dict[str, Any]) -> dict[str, Any]:
        secret = sorted(k for k in _flat_keys(options) if _CREDENTIAL_OPTION.search(k))
        if secret:
            raise ValueError(f"sets {secret}; credentials come from the environment (e.g. AWS_ACCESS_KEY_ID / "
                             "AWS_SECRET_ACCESS_KEY), never from config")
        return options

    @field_validator("artifacts_root")
    @classmethod
    def _backend_installed(cls, value: str) -> str:
        if "://" not in value:
            return value
        import fsspec  # only for a URL; it is light, but a folder needs none of it

        protocol = value.split("://", 1)[0]
        try:
            fsspec.get_filesystem_class(protocol)
        except (ImportError, ValueError) as e:
            # The URL itself is not repeated: it may carry a user name or a token.
            raise ValueError(f"is a {protocol}:// URL, and there is no fsspec backend for {protocol}:// ({e}); for "
                             "s3:// install s3fs (pip install 'finetune-pipeline[s3]')") from None
        return value

    @model_validator(mode="after")
    def _rules(self) -> PipelineConfig:
        rules((not (self.artifacts_storage_options and self.artifacts_url is None),
               "`artifacts_storage_options` is set but `artifacts_root` is a folder"))
        self.sweep_points()  # every point checked against the train section now, one line per problem
        return self

    def sweep_points(self) -> list[SweepPoint]:
        """The sweep's points, each the train section with its overrides applied (none without a sweep)."""
        return expand(self.sweep, self.train) if self.sweep.enabled else []

    def path(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else (Path(self.base_dir) / p).resolve()

    @property
    def raw_dir(self) -> Path:
        return self.path(self.data.raw_dir)

    @property
    def artifacts_url(self) -> str | None:
        """The object-storage URL holding the artifacts, or None when artifacts_root is a folder."""
        return self.artifacts_root.rstrip("/") if "://" in self.artifacts_root else None

    @property
    def artifacts_dir(self) -> Path:
        """The local artifacts folder: artifacts_root itself, or this machine's mirror of the URL."""
        if url := self.artifacts_url:
            # One mirror folder per URL, named after it, so switching buckets never mixes their copies.
            slug = re.sub(r"[^A-Za-z0-9._-]+", "_", url)[:80].strip("._")
            return self.path(self.artifacts_mirror) / f"{slug}-{hashlib.sha256(url.encode()).hexdigest()[:8]}"
        return self.path(self.artifacts_root)

    @property
    def model_cache_dir(self) -> Path:
        return self.path(self.model_cache)

    def section(self, name: str) -> dict[str, Any]:
        """One section as plain JSON data: what recipes hash and lineage records. Code reads attributes."""
        return getattr(self, name).model_dump(mode="json")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

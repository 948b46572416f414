"""The pipeline's settings as a Dagster resource: which config file to use.

The YAML file holds everything (see `finetune_pipeline.lib.config`); the
resource only points at it, so the launchpad, the CLI and the schedule all read
the same file. `FINETUNE_PIPELINE_CONFIG` picks another one (e.g. for tests).
"""


import os

import dagster as dg

from finetune_pipeline.lib.artifacts import ArtifactRef
from finetune_pipeline.lib.config import DEFAULT_CONFIG, PipelineConfig, load_config

CONFIG_ENV = "FINETUNE_PIPELINE_CONFIG"


class PipelineSettings(dg.ConfigurableResource):
    config_path: str = ""  # empty: $FINETUNE_PIPELINE_CONFIG, else configs/demo.yaml

    def load(self) -> PipelineConfig:
        return load_config(self.config_path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def artifact_output(ref: ArtifactRef, **metadata) -> dg.Output:
    """The Dagster face of an artifact: its key is the data version."""
    return dg.Output(
        ref,
        data_version=dg.DataVersion(ref.key),
        metadata={
            "artifact_path": dg.MetadataValue.path(ref.path),
            "artifact_key": ref.key,
            "cache_hit": ref.cache_hit,
            "lineage": dg.MetadataValue.path(str(ref.dir / "lineage.json")),
            **metadata,
        },
    )


def log_to(context: dg.AssetExecutionContext):
    return context.log.info

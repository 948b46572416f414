"""The pipeline's settings as a Dagster resource: which config file to use.

The YAML file holds everything (see `finetune_pipeline.lib.config`); the
resource only points at it, so the launchpad, the CLI and the schedule all read
the same file. `FINETUNE_PIPELINE_CONFIG` picks another one (e.g. for tests).
"""


import os
from pathlib import Path

import dagster as dg

from finetune_pipeline.lib import PROJECT_ROOT
from finetune_pipeline.lib.config import DEFAULT_CONFIG, PipelineConfig, load_config
from finetune_pipeline.lib.storage.artifacts import ArtifactRef

CONFIG_ENV = "FINETUNE_PIPELINE_CONFIG"


class PipelineSettings(dg.ConfigurableResource):
    # empty: $FINETUNE_PIPELINE_CONFIG, else configs/demo.yaml; relative to the project folder.
    config_path: str = ""

    def load(self) -> PipelineConfig:
        path = Path(self.config_path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG).expanduser()
        # A relative path typed in the launchpad means the project's file (configs/banking77.yaml),
        # whatever folder the webserver was started from.
        return load_config(path if path.is_absolute() else PROJECT_ROOT / path)


def artifact_output(ref: ArtifactRef, **metadata) -> dg.Output:
    """The Dagster face of an artifact: its key is the data version."""
    return dg.Output(
        ref,
        data_version=dg.DataVersion(ref.key),
        metadata={
            "artifact_path": dg.MetadataValue.path(ref.path),
            "artifact_key": ref.key,
            "cache_hit": ref.cache_hit,
            "lineage": dg.MetadataValue.path(str(Path(ref.path) / "lineage.json")),  # `dir` would pull it
            # With artifacts on object storage: where the record is (the path above is a local mirror).
            **({"artifact_url": dg.MetadataValue.url(f"{ref.remote['url']}/{ref.asset}/{ref.key}")}
               if ref.remote else {}),
            **metadata,
        },
    )

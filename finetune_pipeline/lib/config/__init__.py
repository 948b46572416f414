"""The run configuration: one YAML file, validated into typed pydantic models when it loads.

Each package owns its sections (data/config.py, models/config.py,
training/config.py, training/openai/config.py, evaluation/config.py,
versions/config.py) and imports them from there; this package composes them
(`pipeline.py`), reads files (`loading.py`), turns validation errors into one
line per problem (`errors.py`), and writes the JSON Schema (`schema.py`) and
docs/configuration.md (`reference.py`). Every public name is re-exported here
for the Dagster layer, the CLI and the tests.
"""

from finetune_pipeline.lib.config.errors import ConfigError
from finetune_pipeline.lib.config.loading import DEFAULT_CONFIG, _merge, config_from_dict, load_config
from finetune_pipeline.lib.config.pipeline import PipelineConfig
from finetune_pipeline.lib.data.config import ColumnMapping, DataConfig, SplitConfig
from finetune_pipeline.lib.evaluation.config import (
    ClassificationConfig,
    EndpointConfig,
    EvalConfig,
    VllmConfig,
)
from finetune_pipeline.lib.models.config import ModelConfig
from finetune_pipeline.lib.training.config import LoraConfig, TrainConfig, TrainPodConfig
from finetune_pipeline.lib.training.openai.config import OpenAIConfig
from finetune_pipeline.lib.versions.config import (
    CostConfig,
    PromotionConfig,
    ScheduleConfig,
    ServingConfig,
)

__all__ = [
    "DEFAULT_CONFIG", "ClassificationConfig", "ColumnMapping", "ConfigError", "CostConfig", "DataConfig",
    "EndpointConfig", "EvalConfig", "LoraConfig", "ModelConfig", "OpenAIConfig", "PipelineConfig",
    "PromotionConfig", "ScheduleConfig", "ServingConfig", "SplitConfig", "TrainConfig", "TrainPodConfig",
    "VllmConfig", "_merge", "config_from_dict", "load_config",
]

"""The pipeline's stages as plain functions: config + input refs -> artifact ref.

Each stage computes its recipe key from its inputs' keys, its config section
and its code version; if that artifact exists it is reused (a cache hit),
otherwise it is built in a temporary folder and renamed into place with its
lineage. The Dagster assets in `finetune_pipeline.defs` are thin wrappers
around these; tests and the CLI can call them directly.
"""

from finetune_pipeline.lib.stages.code_versions import CODE_VERSIONS
from finetune_pipeline.lib.stages.data import (
           eval_set,
           load_raw_rows,
           raw_examples,
           training_dataset,
)
from finetune_pipeline.lib.stages.evaluation import (
           model_eval,
           model_eval_key,
           sample_val_prompts,
)
from finetune_pipeline.lib.stages.models import base_model, base_model_dir, merged_model
from finetune_pipeline.lib.stages.training import (
           launch_subprocess,
           lora_adapter,
           training_work_dir,
)

__all__ = ["CODE_VERSIONS", "raw_examples", "load_raw_rows", "training_dataset", "eval_set", "base_model",
           "base_model_dir", "merged_model", "launch_subprocess", "training_work_dir", "lora_adapter", "model_eval",
           "model_eval_key", "sample_val_prompts"]

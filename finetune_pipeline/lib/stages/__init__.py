"""The pipeline's stages as plain functions: config + input refs -> artifact ref, one per asset.

Each stage is its inputs, its recipe and its build function; `common.build_artifact`
computes the recipe key (with the stage's code version from `code_versions.py`),
reuses the artifact if that key exists (a cache hit) and otherwise builds it in a
temporary folder and publishes it with its lineage. The Dagster assets in
`finetune_pipeline.defs` are thin wrappers around these; tests, benchmarks and the
CLI call them directly. Modules follow the asset groups: data, models, training,
evaluation, promotion, openai.
"""

from finetune_pipeline.lib.stages.baselines import prompt_baselines
from finetune_pipeline.lib.stages.code_versions import CODE_VERSIONS
from finetune_pipeline.lib.stages.common import build_artifact, promotion_store, registry, store
from finetune_pipeline.lib.stages.data import eval_set, load_raw_rows, raw_examples, training_dataset
from finetune_pipeline.lib.stages.evaluation import backend_for, model_eval, model_eval_key, sample_val_prompts
from finetune_pipeline.lib.stages.general import general_eval, general_eval_key, general_suite
from finetune_pipeline.lib.stages.models import base_model, base_model_dir, merged_model
from finetune_pipeline.lib.stages.training import launch_subprocess, lora_adapter, training_work_dir

__all__ = ["CODE_VERSIONS", "build_artifact", "store", "registry", "promotion_store", "raw_examples",
           "load_raw_rows", "training_dataset", "eval_set", "base_model", "base_model_dir", "merged_model",
           "launch_subprocess", "training_work_dir", "lora_adapter", "backend_for", "model_eval", "model_eval_key",
           "sample_val_prompts", "prompt_baselines", "general_suite", "general_eval", "general_eval_key"]

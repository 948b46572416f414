"""The one table of stage code versions: part of every recipe key (see common.build_artifact)."""

# Bump a stage's code version when its output for the same inputs changes;
# that (and only that) invalidates the stage's cached artifacts.
CODE_VERSIONS = {
    "raw_examples": "2",  # 2: parse errors carry a rule name; per-line UTF-8; csv module
    "base_model": "1",
    "training_dataset": "2",  # 2: conflicting labels quarantine the whole group
    "lora_adapter": "2",  # 2: padding-free engine, checkpoints, methods, general mix
    "merged_model": "1",
    "eval_set": "1",
    "model_eval": "3",  # 2: eval set artifact, backend in the recipe; 3: the report keeps its confusion matrices
    "leaderboard": "1",
    "serving_spec": "1",
    "openai_fine_tuned_model": "1",
}

"""The one table of stage code versions: part of every recipe key (see common.build_artifact)."""

# Bump a stage's code version when its output for the same inputs changes;
# that (and only that) invalidates the stage's cached artifacts.
CODE_VERSIONS = {
    "raw_examples": "2",  # 2: parse errors carry a rule name; per-line UTF-8; csv module
    "base_model": "1",
    "training_dataset": "2",  # 2: conflicting labels quarantine the whole group
    "lora_adapter": "3",  # 2: padding-free engine, checkpoints, methods, general mix; 3: QLoRA anywhere, device/dtype in info
    "merged_model": "2",  # 2: saved in the training dtype; a full fine-tune is a record, not a merge
    "eval_set": "1",
    "model_eval": "6",  # 2: eval set artifact, backend in the recipe; 3: the report keeps its confusion matrices;
    # 4: the report records the device that generated (inference cost); 5: prompted versions, bootstrap intervals,
    # single-request latency, tokens per request, the label set; 6: likelihood scoring (scoring in the recipe)
    "leaderboard": "3",  # 2: costs by recorded device, inference cost per 1,000 requests; 3: suites, intervals, latency,
    # tokens, API token prices, the verdict
    "prompt_recipe": "1",  # a prompting baseline's shots and constraint (stages/baselines.py)
    "general_suite": "1",
    "general_reference": "1",  # the base model's greedy answers to the general suite and their likelihood
    "general_eval": "1",
    "serving_spec": "2",  # 2: the serving environment's vLLM server, --tensor-parallel-size, CPU env
    "openai_fine_tuned_model": "1",
    "sweep_point": "1",  # a sweep point's validation record: eval loss, val metrics (stages/sweep.py)
    "sweep_winner": "1",  # the sweep's choice from those records
}

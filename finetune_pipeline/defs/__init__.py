"""The Dagster layer: assets, checks, jobs, schedules, sensors and resources, each a thin wrapper over a
stage in finetune_pipeline.lib.stages. Everything Dagster-specific lives here, nothing else does."""

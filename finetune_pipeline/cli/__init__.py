"""The `finetune-pipeline` command line (entry point: `finetune_pipeline.cli:main`)."""

from finetune_pipeline.cli.main import main

__all__ = ["main"]

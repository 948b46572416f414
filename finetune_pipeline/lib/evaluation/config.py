"""The `eval` section of the run config: how versions are run on the eval set, and what is scored."""

from __future__ import annotations

import re
import string
from typing import Literal

from pydantic import Field, field_validator, model_validator

from finetune_pipeline.lib.section import Section, rules

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

Scoring = Literal["greedy", "constrained", "likelihood"]
AnswerMode = Literal["free", "constrained"]


class EndpointConfig(Section):
    """An OpenAI-compatible chat endpoint: OpenAI itself, `vllm serve` or `transformers serve`.

    The key is read from the environment variable named here, never from this file.
    """

    base_url: str = Field("https://api.openai.com/v1", min_length=1, description="The endpoint's base URL.")
    # "{key}" matches `vllm serve ... --served-model-name <version key>` (what serving_spec writes);
    # `transformers serve <dir>` names the model by its folder, hence "{path}".
    model_name: str = Field("{key}", description="The model name sent for local versions: {key} (the version key) "
                                                 "or {path} (its folder); OpenAI fine-tuned versions are asked for "
                                                 "by their remote id.")
    api_key_env: str = Field("OPENAI_API_KEY", description="The environment variable holding the API key (its "
                                                           "name, never the key).")
    concurrency: int = Field(4, ge=1, description="Requests in flight at once.")
    timeout_s: float = Field(120.0, gt=0, description="Timeout of one request, in seconds.")
    max_retries: int = Field(3, ge=0, description="The openai client's own retries (backoff) on 429/5xx.")

    @field_validator("model_name")
    @classmethod
    def _placeholders(cls, value: str) -> str:
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        except ValueError:
            names = {"?"}  # an unbalanced brace
        if names - {"key", "path"}:
            raise ValueError("may only use the placeholders {key} and {path}")
        return value

    @field_validator("api_key_env")
    @classmethod
    def _a_name(cls, value: str) -> str:
        # A pasted key (sk-...) would otherwise sit in config files and lineage; it is not echoed here.
        if not _ENV_NAME.fullmatch(value):
            raise ValueError("must be the name of an environment variable (letters, digits and _), not the key "
                             "itself")
        return value


class VllmConfig(Section):
    """Offline `vllm.LLM` settings for the `vllm` eval backend (CPU or GPU).

    vLLM runs in the serving environment (`scripts/setup.sh serve`), in a child
    process the backend starts once per evaluated version.
    """

    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="Share of GPU memory vLLM may take "
                                                                        "(GPU only).")
    # Caps the KV cache; eval prompts are short.
    max_model_len: int = Field(4096, gt=0, description="Longest prompt + answer in tokens (capped at the "
                                                           "model's own context length).")
    # "auto" follows model.dtype's rule (lib/models/device.py), so vLLM and the transformers backend
    # run the same weights in the same precision: bf16 on CUDA, fp32 on CPU.
    dtype: Literal["auto", "half", "float16", "bfloat16", "float", "float32"] = Field(
        "auto", description="Weights' dtype in vLLM; auto = bfloat16 on CUDA, float32 on CPU (as the transformers "
                            "backend).")
    kv_cache_space_gib: int = Field(1, ge=1, description="KV cache size in GiB on CPU (VLLM_CPU_KVCACHE_SPACE); "
                                                         "on a GPU gpu_memory_utilization decides it.")
    # Measured on 2 CPU cores: start-up 81 s eager vs 178 s with torch.compile, for the same answers.
    enforce_eager: bool | None = Field(None, description="Skip torch.compile and CUDA graphs; unset = eager on CPU "
                                                         "(halves start-up), compiled on CUDA.")
    startup_timeout_s: float = Field(1200.0, gt=0, description="Longest wait for vLLM's engine to start, in "
                                                               "seconds.")
    request_timeout_s: float = Field(3600.0, gt=0, description="Longest wait for one batch of answers, in seconds.")


class ClassificationConfig(Section):
    """Classification-aware evaluation of one field of the JSON output.

    With `field` set, every eval report adds, for that field: accuracy, macro-F1
    over the label set, `valid_label` (the share of outputs that parse and name a
    known label) and a confusion matrix PNG. `scoring` adds passes beside free
    greedy generation (whose answers stay the main metrics): `constrained`
    restricts generation to the label set (a prefix-trie logits constraint: the
    output can only be `{"<field>": "<a known label>"}`), reported as
    `constrained/...`; `likelihood` ranks every label by the model's
    log-probability of its answer tokens, reported as `likelihood/accuracy`,
    `likelihood/macro_f1` and `likelihood/top3_accuracy`. `constrained: true` is
    the older spelling of adding `constrained` to `scoring`. `answers: constrained`
    makes the label-constrained decoding the main answers and skips free
    generation: the fast eval of a classifier (docs/evaluation.md#eval-speed).
    """

    field: str = Field("", description="The JSON output field that is a class label; empty = not a "
                                       "classification task.")
    labels_file: str = Field("", description="A JSON list of the labels, relative to the config file; empty = the "
                                             "labels found in the training split.")
    constrained: bool = Field(False, description="Also evaluate with generation restricted to the label set "
                                                 "(constrained/... metrics); the older spelling of `scoring: "
                                                 "constrained`.")
    # A list, not one choice: the passes are independent, and a benchmark compares them on the same versions.
    scoring: list[Scoring] = Field(default_factory=lambda: ["greedy"], description=(
        "How labels are scored, beside free greedy generation (always run, the main metrics): greedy (nothing "
        "more), constrained (greedy decoding restricted to the label set, constrained/...), likelihood (every "
        "label ranked by its log-probability, likelihood/... with top-3 accuracy); one or a list."))

    # Constrained answers are always a label, so they measure which label the model prefers, not whether it
    # keeps the format: a free pass shows that (valid_label); skipping it is what makes this fast.
    answers: AnswerMode = Field("free", description=(
        "Where the main answers come from: free (greedy generation, the model may answer anything) or constrained "
        "(greedy decoding restricted to the label set, stopped as soon as the label is decided: every answer is a "
        "label, no free generation runs, several times faster)."))

    @field_validator("scoring", mode="before")
    @classmethod
    def _one_or_a_list(cls, value):
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _rules(self) -> ClassificationConfig:
        extra = [s for s in self.scoring if s != "greedy"]
        needs_field = f"`scoring: {extra[0] if extra else ''}` needs `field` (the label field)"
        rules((not (self.constrained and not self.field), "`constrained` needs `field` (the label field)"),
              (not (extra and not self.field), needs_field),
              (not (self.answers == "constrained" and not self.field),
               "`answers: constrained` needs `field` (the label field)"),
              (not ("constrained" in self.scoring and "constrained" in self.model_fields_set
                    and not self.constrained),
               "`constrained: false` contradicts `scoring: constrained`; drop `constrained` (its older spelling)"))
        return self

    def passes(self) -> list[Scoring]:
        """The label-scoring passes beside free generation, in run order: constrained, then likelihood."""
        wanted = set(self.scoring) | ({"constrained"} if self.constrained else set())
        return [s for s in ("constrained", "likelihood") if s in wanted]


class GeneralSuiteConfig(Section):
    """The general-ability suite every local version is scored on, to measure forgetting (general_eval).

    Per version: the mean per-token negative log-likelihood of the suite's reference answers (general/nll),
    and of the base model's own greedy answers (general/base_answer_nll); and both as the change from the
    version's base model (general/nll_delta, general/drift). Scored teacher-forced on the version's weights.
    """

    suite: str = Field("", description="A chat JSONL of general prompts with reference answers, relative to the "
                                       "config file; empty = the shipped data/general_eval.jsonl.")
    max_new_tokens: int = Field(64, gt=0, description="Longest greedy answer of the base model, whose likelihood "
                                                      "under each version is the drift.")
    batch_size: int = Field(8, gt=0, description="Rows scored together.")


class EvalConfig(Section):
    """Evaluation of every model version on the test split."""

    max_new_tokens: int = Field(48, gt=0, description="Longest answer generated, in tokens.")
    batch_size: int = Field(16, gt=0, description="Prompts generated together.")
    # Opt-in, not a default: on CPU bf16 gave the same accuracy but not always the same greedy answers as fp32
    # (benchmarks/eval_speed.py, docs/evaluation.md#eval-speed).
    dtype: Literal["model", "float32", "bfloat16", "float16"] = Field(
        "model", description="The transformers backend's weights dtype at eval: model = model.dtype (auto: bf16 on "
                             "CUDA, fp32 on CPU); bfloat16 is faster on CPUs with avx512_bf16/AMX, with answers "
                             "that can differ from fp32's.")
    limit: int = Field(0, ge=0, description="Evaluate the first this many test rows; 0 = the whole test split.")
    # A sorted test file (BANKING77's is grouped by intent) makes `limit` a biased slice; a sample is not.
    sample: int = Field(0, ge=0, description="Evaluate a seeded random sample of this many test rows, the same rows "
                                             "for every version (after limit); 0 = all.")
    # OpenAI fine-tuned versions always use the openai backend with their remote id.
    backend: Literal["transformers", "vllm", "openai"] = Field(
        "transformers", description="How local versions are run: transformers (in process, CPU or GPU), vllm "
                                    "(offline vllm.LLM from the serving environment, CPU or GPU) or openai (an "
                                    "OpenAI-compatible server, see openai).")
    openai: EndpointConfig = Field(default_factory=EndpointConfig, description="The endpoint of the openai backend.")
    vllm: VllmConfig = Field(default_factory=VllmConfig, description="Settings of the vllm backend.")
    classification: ClassificationConfig = Field(default_factory=ClassificationConfig,
                                                 description="Classification metrics of one output field.")
    # Batched throughput prices a request; a user waiting on one request sees its latency alone.
    latency_requests: int = Field(12, ge=0, description="Eval rows also sent one at a time, for the latency "
                                                        "percentiles (p50, p95) of a single request; 0 = none.")
    general: GeneralSuiteConfig = Field(default_factory=GeneralSuiteConfig,
                                        description="The general-ability suite (forgetting).")
    resamples: int = Field(1000, ge=100, description="Bootstrap resamples of each metric's 95% confidence "
                                                     "interval.")

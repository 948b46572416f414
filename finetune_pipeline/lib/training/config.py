"""The `train` section of the run config: method, hyperparameters, checkpoints, launcher and where it runs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from finetune_pipeline.lib.section import Section, rules


class LoraConfig(Section):
    """The low-rank adapters (lora and qlora methods)."""

    r: int = Field(16, gt=0, description="Rank of the adapter matrices.")
    alpha: int = Field(32, gt=0, description="LoRA scaling numerator; alpha/r = 2 is the usual scaling for "
                                             "small ranks.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapters' input.")
    target_modules: list[str] | str = Field(
        "all-linear", description="The modules that get adapters: a list of module names, or all-linear (every "
                                  "linear layer but the output head).")


class QLoraConfig(Section):
    """The 4-bit base of method qlora (bitsandbytes, on CUDA or CPU); the defaults are the QLoRA paper's recipe."""

    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type of the frozen base weights: "
                                                                 "nf4 (normal float, QLoRA's) or fp4.")
    double_quant: bool = Field(True, description="Quantise the quantisation constants too (about 0.4 bit per "
                                                 "weight less).")
    compute_dtype: Literal["bfloat16", "float16", "float32"] = Field(
        "bfloat16", description="The dtype 4-bit layers dequantise to and multiply in.")
    # Paged optimizers keep their state in memory the driver pages out under pressure (CUDA); bnb 0.50 steps
    # them on CPU tensors too.
    optim: Literal["paged_adamw_32bit", "paged_adamw_8bit", "adamw_8bit", "adamw_torch"] = Field(
        "paged_adamw_32bit", description="The optimizer of the adapters (a transformers optim name).")


class TrainPodConfig(Section):
    """The training pod when train.runner is k8s (Dagster's PipesK8sClient; `pip install -e '.[k8s]'`)."""

    image: str = Field("", description="The project image, with a CUDA build of torch; required with "
                                       "runner k8s.")
    namespace: str = Field("default", description="Kubernetes namespace of the training pod.")
    gpus: int = Field(1, ge=0, description="nvidia.com/gpu limit; set train.num_processes to the same number.")
    cpu: str = Field("8", description="CPU limit (a Kubernetes quantity).")
    memory: str = Field("64Gi", description="Memory limit (a Kubernetes quantity).")
    volume_claim: str = Field(
        "", description="The ReadWriteMany volume holding artifacts_root and model_cache, mounted at the same path "
                        "as in the run's pod; not needed when artifacts_root is an object-storage URL.")
    mount_path: str = Field("", description="Where the pod mounts volume_claim: the same path as in the run's pod.")
    node_selector: dict[str, str] = Field({}, description="Node labels the pod must run on.")
    env_from_secret: str = Field("", description="A Secret exposed to the pod as environment variables (the "
                                                 "bucket's credentials with artifacts on object storage).")
    service_account: str = Field("", description="The pod's service account (IRSA, Workload Identity).")
    in_cluster: bool = Field(True, description="true: the launcher runs inside the cluster (the run pod); "
                                               "false: it uses ~/.kube/config (a laptop).")

    @field_validator("cpu", "memory", mode="before")
    @classmethod
    def _quantity(cls, value: Any) -> Any:
        # cpu: 8 is as much a Kubernetes quantity as cpu: "8".
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


class TrainConfig(Section):
    """Fine-tuning of the base model: method, hyperparameters, evaluation and checkpoints, launcher, runner."""

    lora: LoraConfig = Field(default_factory=LoraConfig, description="The adapters (lora and qlora methods).")
    epochs: float = Field(1.0, gt=0, description="Passes over the train split (max_steps > 0 overrides it).")
    batch_size: int = Field(8, gt=0, description="Examples per device per step (also the eval batch size).")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    # LoRA tolerates a much larger learning rate than full fine-tuning.
    learning_rate: float = Field(1e-3, gt=0, description="Peak learning rate (cosine schedule); near 2e-5 for "
                                                         "method full.")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Share of the steps spent warming up the "
                                                              "learning rate.")
    max_steps: int = Field(-1, ge=-1, description="> 0: train exactly this many steps, whatever epochs says; "
                                                  "-1: use epochs.")
    seed: int = Field(42, ge=0, description="Seed of initialisation, data order and the general-instruction draw.")
    method: Literal["lora", "qlora", "full"] = Field(
        "lora", description="lora: low-rank adapters on a frozen base; qlora: the same on a 4-bit base "
                            "(bitsandbytes, CPU or CUDA; see qlora); full: every weight trains, the artifact is a "
                            "whole model.")
    quantization: Literal["none", "nf4"] = Field(
        "none", description="Older spelling of method qlora: nf4 with method lora means qlora.")
    qlora: QLoraConfig = Field(default_factory=QLoraConfig, description="The 4-bit base and optimizer of method "
                                                                        "qlora.")
    attn_implementation: str = Field(
        "auto", min_length=1,
        description="Attention kernel the model trains with: auto (flash_attention_3/2 on CUDA with padding-free "
                    "batches when flash-attn is installed, else sdpa), eager, sdpa, flash_attention_2, "
                    "flash_attention_3, or any name transformers accepts.")
    # The best checkpoint (lowest eval loss) is loaded at the end either way.
    eval_steps: int = Field(50, gt=0, description="Eval loss on the val split every this many steps.")
    early_stopping_patience: int = Field(3, ge=0, description="Stop after this many evals without improvement; "
                                                              "0 = never stop early.")
    logging_steps: int = Field(5, gt=0, description="Log the training loss every this many steps.")
    # Checkpoints live in a work dir that outlives the training process, so a killed run resumes.
    save_steps: int = Field(0, ge=0, description="Checkpoint every this many steps: 0 = every eval_steps, "
                                                 "otherwise a multiple of eval_steps.")
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept besides the best one.")
    # Measured 1.36x faster on 2 CPU cores with grouped padding than padding-free (benchmarks/training.py).
    packing: bool | Literal["auto"] = Field(
        "auto", description="true: padding-free batches (checked exact on the model at start, else grouped "
                            "padding); false: length-grouped dynamic padding; auto: padding-free on a GPU, grouped "
                            "padding on CPU.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward to save memory "
                                                            "(slower on small models).")
    torch_compile: bool = Field(False, description="Compile the model with torch.compile (slower on small CPU "
                                                   "runs).")
    general_mix_ratio: float = Field(0.0, ge=0, lt=1, description="Forgetting guard: add round(ratio x train rows) "
                                                                  "examples of general_mix_source; 0 = off.")
    general_mix_source: str = Field("data/general_instructions.jsonl",
                                    description="Chat JSONL of general instructions, relative to the config file.")
    num_processes: int = Field(1, ge=1, description="Data-parallel training processes on this machine "
                                                    "(one per GPU or CPU share).")
    launcher: Literal["torchrun", "accelerate"] = Field(
        "torchrun", description="How num_processes > 1 start: torchrun (CPU or GPUs) or accelerate (GPUs only).")
    # Not part of the adapter's recipe: where it trained does not change what was trained.
    runner: Literal["subprocess", "k8s"] = Field(
        "subprocess", description="Where the training child runs: subprocess (beside the run) or k8s (its own GPU "
                                  "pod, see pod).")
    pod: TrainPodConfig = Field(default_factory=TrainPodConfig, description="The training pod (runner k8s).")

    @property
    def effective_method(self) -> Literal["lora", "qlora", "full"]:
        """lora, qlora or full; `quantization: nf4` (the older spelling) with method lora means qlora."""
        return "qlora" if self.method == "lora" and self.quantization == "nf4" else self.method

    @model_validator(mode="after")
    def _rules(self) -> TrainConfig:
        rules(
            (not (self.method == "full" and self.quantization != "none"),
             "`quantization`: nf4 trains adapters on a 4-bit base; it cannot go with `method`: full"),
            # Every evaluated step must have a checkpoint that can be loaded as "the best".
            (self.save_steps % self.eval_steps == 0,
             f"`save_steps` ({self.save_steps}) must be a positive multiple of `eval_steps` ({self.eval_steps}) "
             "or 0 (every eval), so the best evaluated step has a checkpoint"),
        )
        return self

"""Training stage: base model, LoRA adapter (a Pipes child), merged model."""


import sys
from pathlib import Path

import dagster as dg

from finetune_pipeline.defs.logs import core_logs
from finetune_pipeline.defs.settings import PipelineSettings, artifact_output
from finetune_pipeline.lib import stages
from finetune_pipeline.lib.evaluation.merge_check import merged_matches_adapter
from finetune_pipeline.lib.reporting.charts import loss_curve_png
from finetune_pipeline.lib.reporting.markdown import png_markdown
from finetune_pipeline.lib.stages.models import is_full_fine_tune
from finetune_pipeline.lib.storage.artifacts import ArtifactRef
from finetune_pipeline.lib.training.engine import child_command
from finetune_pipeline.lib.training.pod import pod_run_args
from finetune_pipeline.lib.training.spec import TrainSpec
from finetune_pipeline.lib.versions.costs import recorded_device

MODEL_VERSIONS = dg.DynamicPartitionsDefinition(name="model_versions")


@dg.asset(group_name="training", kinds={"huggingface", "safetensors"}, code_version=stages.CODE_VERSIONS["base_model"],
          description="The base model as local safetensors; also registered as a model version (the baseline).")
def base_model(context: dg.AssetExecutionContext, settings: PipelineSettings) -> dg.Output:
    with core_logs(context):
        ref = stages.base_model(settings.load(), context.run_id)
    context.instance.add_dynamic_partitions(MODEL_VERSIONS.name, [ref.info["version_key"]])
    weights = stages.base_model_dir(ref, pull=False)  # metadata only: nothing is pulled for it
    return artifact_output(ref, spec=ref.info["spec"], model_dir=dg.MetadataValue.path(str(weights)),
                           version_key=ref.info["version_key"])


@dg.asset(group_name="training", kinds={"pytorch", "peft"}, pool="gpu", code_version=stages.CODE_VERSIONS["lora_adapter"],
          # A killed child or a lost node fails the step; the retry resumes from
          # the last complete checkpoint in the recipe's work dir.
          retry_policy=dg.RetryPolicy(max_retries=2, delay=5),
          description="LoRA adapter weights (or a full fine-tune), trained in a child process through Dagster Pipes; "
                      "resumes from its last complete checkpoint when retried.")
def lora_adapter(context: dg.AssetExecutionContext, settings: PipelineSettings,
                 pipes_subprocess_client: dg.PipesSubprocessClient,
                 base_model: ArtifactRef, training_dataset: ArtifactRef) -> dg.Output:
    launch = pipes_launcher(context, pipes_subprocess_client)
    with core_logs(context):
        ref = stages.lora_adapter(settings.load(), base_model, training_dataset, launch, context.run_id)
    return artifact_output(ref, **training_metadata(ref.info))


def pipes_launcher(context: dg.AssetExecutionContext, pipes_subprocess_client: dg.PipesSubprocessClient):
    """The training child launched through Dagster Pipes (a subprocess, or a k8s pod): lora_adapter and sweeps."""
    def launch(spec_path: Path) -> dict:
        # One process, or train.num_processes under torchrun/accelerate; rank 0 talks Pipes.
        tc = TrainSpec.load(spec_path).train
        if tc.runner == "k8s":  # the same child on its own GPU pod
            from dagster_k8s import PipesK8sClient

            client = PipesK8sClient(load_incluster_config=tc.pod.in_cluster)
            invocation = client.run(context=context, **pod_run_args(tc, spec_path))
        else:
            command = child_command(sys.executable, spec_path, tc)
            invocation = pipes_subprocess_client.run(command=command, context=context)
        messages = invocation.get_custom_messages()
        if not messages:
            raise RuntimeError("the training child finished without reporting a result")
        return messages[-1]

    return launch


def training_metadata(info: dict) -> dict:
    keys = ("method", "packing", "train_loss", "final_loss", "eval_loss", "best_step", "stopped_early", "steps",
            "resumed_from_step", "num_processes", "general_examples", "tokens_seen", "train_seconds")
    metadata = {k: info[k] for k in keys if info.get(k) is not None}
    device = recorded_device(info.get("device"))  # what the leaderboard prices the training by
    if device is not None:
        metadata["device"] = device if isinstance(device, str) else device.label()
    if info.get("dtype"):
        metadata["dtype"] = info["dtype"]
    if info.get("tokens_per_second") is not None:
        metadata["tokens_per_second"] = dg.MetadataValue.float(float(info["tokens_per_second"]))
        metadata["throughput"] = f"{info['tokens_per_second']:,.0f} non-pad tokens/s"
    if info.get("padding_fraction") is not None:
        metadata["padding_fraction"] = dg.MetadataValue.float(float(info["padding_fraction"]))
    if info.get("loss_curve"):
        metadata["loss_curve"] = dg.MetadataValue.md(png_markdown(loss_curve_png(info["loss_curve"]), "loss curve"))
    return metadata


@dg.asset(group_name="training", kinds={"peft", "safetensors"}, code_version=stages.CODE_VERSIONS["merged_model"],
          description="Base + adapter merged (merge_and_unload) into a plain transformers model; a model version. "
                      "After a full fine-tune (train.method: full) nothing is merged: the trained model itself "
                      "becomes the version (kind full) and this artifact only names it.")
def merged_model(context: dg.AssetExecutionContext, settings: PipelineSettings, base_model: ArtifactRef,
                 lora_adapter: ArtifactRef) -> dg.Output:
    with core_logs(context):
        ref = stages.merged_model(settings.load(), base_model, lora_adapter, context.run_id)
    context.instance.add_dynamic_partitions(MODEL_VERSIONS.name, [ref.info["version_key"]])
    extra = {"method": "full", "model_artifact": f"{lora_adapter.asset}/{lora_adapter.key}"} \
        if is_full_fine_tune(lora_adapter) else {}
    return artifact_output(ref, version_key=ref.info["version_key"], **extra)


@dg.asset_check(asset=merged_model, blocking=True,
                additional_ins={name: dg.AssetIn(name) for name in ("base_model", "lora_adapter", "training_dataset")},
                description="The merged model loads with plain AutoModelForCausalLM and matches base + adapter "
                            "greedily on three val prompts. After a full fine-tune there is no merge: it passes as not "
                            "applicable, saying so in its metadata.")
def merged_matches_base_plus_adapter(merged_model: ArtifactRef, base_model: ArtifactRef,
                                     lora_adapter: ArtifactRef, training_dataset: ArtifactRef) -> dg.AssetCheckResult:
    if is_full_fine_tune(lora_adapter):
        # Nothing was merged: the version is the trained model itself, so there is nothing to compare.
        return dg.AssetCheckResult(passed=True, metadata={
            "applicable": False,
            "reason": "not applicable: a full fine-tune (train.method: full) has no adapter and no merge; "
                      f"the model version is {lora_adapter.asset}/{lora_adapter.key} as trained"})
    prompts = stages.sample_val_prompts(training_dataset, 3)
    same, rows = merged_matches_adapter(stages.base_model_dir(base_model), lora_adapter.dir, merged_model.dir, prompts)
    table = "| base + adapter | merged |\n|---|---|\n" + "\n".join(
        f"| {r['adapter'][:80]!r} | {r['merged'][:80]!r} |" for r in rows)
    return dg.AssetCheckResult(passed=same, metadata={"prompts": len(rows), "outputs": dg.MetadataValue.md(table)})


@dg.asset(group_name="training", kinds={"json"}, code_version=stages.CODE_VERSIONS["prompt_recipe"],
          description="The prompting baselines of the config's `baselines:` section: each a prompt recipe (k "
                      "training rows shown as earlier turns, an optional decoding constraint) registered as a model "
                      "version of kind prompted, evaluated by model_eval like any other version.")
def prompt_baselines(context: dg.AssetExecutionContext, settings: PipelineSettings, base_model: ArtifactRef,
                     training_dataset: ArtifactRef) -> dg.MaterializeResult:
    with core_logs(context):
        keys = stages.prompt_baselines(settings.load(), base_model, training_dataset, context.run_id)
    if keys:
        context.instance.add_dynamic_partitions(MODEL_VERSIONS.name, keys)
    return dg.MaterializeResult(metadata={"versions": dg.MetadataValue.json(keys), "count": len(keys)})

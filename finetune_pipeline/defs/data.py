"""Data stage: raw files -> validated, split chat dataset, with blocking checks."""


import dagster as dg

from finetune_pipeline.defs.logs import core_logs
from finetune_pipeline.defs.settings import PipelineSettings, artifact_output
from finetune_pipeline.lib import stages
from finetune_pipeline.lib.data.cleaning import inputs_shared_between_splits, read_split
from finetune_pipeline.lib.reporting.markdown import markdown_table
from finetune_pipeline.lib.storage.artifacts import ArtifactRef


@dg.asset(group_name="data", kinds={"python", "jsonl"}, code_version=stages.CODE_VERSIONS["raw_examples"],
          description="Every JSONL/CSV/Parquet file under the raw folder, read through the column mapping.")
def raw_examples(context: dg.AssetExecutionContext, settings: PipelineSettings) -> dg.Output:
    with core_logs(context):
        ref = stages.raw_examples(settings.load(), context.run_id)
    files = ref.info["files"]
    table = markdown_table(["file", "rows", "sha256"],
                           ([name, f["rows"], f["sha256"][:12]] for name, f in files.items()))
    return artifact_output(ref, raw_rows=ref.info["raw_rows"], files=dg.MetadataValue.md(table))


@dg.asset(group_name="data", kinds={"python", "jsonl"}, code_version=stages.CODE_VERSIONS["training_dataset"],
          description="Chat-format train/val/test JSONL (OpenAI format) plus a quarantine with one reason per row.")
def training_dataset(context: dg.AssetExecutionContext, settings: PipelineSettings, raw_examples: ArtifactRef,
                     base_model: ArtifactRef) -> dg.Output:
    with core_logs(context):
        ref = stages.training_dataset(settings.load(), raw_examples, base_model, context.run_id)
    info = ref.info
    sample = read_split(ref.dir / "train.jsonl")[:5]
    sample_md = markdown_table(["input", "output"], ([r["messages"][-2]["content"], r["messages"][-1]["content"]]
                                                     for r in sample), max_width=80)
    return artifact_output(
        ref,
        raw_rows=info["raw_rows"], kept=info["kept"], quarantined=info["quarantined"],
        **{f"rows_{split}": n for split, n in info["splits"].items()},
        reasons=dg.MetadataValue.json(info["reasons"]),
        per_file=dg.MetadataValue.json(info["files"]),
        sample=dg.MetadataValue.md(sample_md),
        quarantine=dg.MetadataValue.path(str(ref.dir / "quarantine.jsonl")),
    )


@dg.asset_check(asset=training_dataset, blocking=True,
                description="Every raw row is either kept or quarantined: nothing is lost.")
def rows_accounted_for(training_dataset: ArtifactRef) -> dg.AssetCheckResult:
    info = training_dataset.info
    quarantined = sum(1 for _ in open(training_dataset.dir / "quarantine.jsonl"))
    # unused.jsonl holds the valid rows few-shot sampling (data.split.*_per_class) did not draw.
    kept = sum(len(read_split(path)) for s in ("train", "val", "test", "unused")
               if (path := training_dataset.dir / f"{s}.jsonl").is_file())
    ok = info["raw_rows"] == kept + quarantined
    return dg.AssetCheckResult(passed=ok, metadata={"raw_rows": info["raw_rows"], "kept": kept,
                                                    "quarantined": quarantined})


@dg.asset_check(asset=training_dataset, blocking=True,
                description="No user input (case and spacing ignored) appears in more than one split.")
def no_input_shared_between_splits(training_dataset: ArtifactRef) -> dg.AssetCheckResult:
    shared = inputs_shared_between_splits(training_dataset.dir)
    return dg.AssetCheckResult(passed=not shared, metadata={"shared_inputs": len(shared),
                                                            "examples": dg.MetadataValue.json(dict(list(shared.items())[:5]))})


@dg.asset_check(asset=training_dataset, blocking=True, description="Training needs at least data.min_train_rows rows.")
def min_train_rows(training_dataset: ArtifactRef, settings: PipelineSettings) -> dg.AssetCheckResult:
    n, minimum = training_dataset.info["splits"]["train"], settings.load().data.min_train_rows
    return dg.AssetCheckResult(passed=n >= minimum, metadata={"train_rows": n, "minimum": minimum})


@dg.asset_check(asset=training_dataset, description="Warns below the seed's recommended train size.")
def recommended_train_rows(training_dataset: ArtifactRef, settings: PipelineSettings) -> dg.AssetCheckResult:
    n, recommended = training_dataset.info["splits"]["train"], settings.load().data.recommended_train_rows
    return dg.AssetCheckResult(passed=n >= recommended, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"train_rows": n, "recommended": recommended})

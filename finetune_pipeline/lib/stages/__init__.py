"""The pipeline's stages as plain functions: config + input refs -> artifact ref.

Each stage computes its recipe key from its inputs' keys, its config section
and its code version; if that artifact exists it is reused (a cache hit),
otherwise it is built in a temporary folder and renamed into place with its
lineage. The Dagster assets in `finetune_pipeline.defs` are thin wrappers
around these; tests and the CLI can call them directly.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from finetune_pipeline.lib import stores as storage
from finetune_pipeline.lib.storage.artifacts import ArtifactRef, ArtifactStore, hash_file, recipe_key
from finetune_pipeline.lib.models.base_models import load_tokenizer, resolve_base_model
from finetune_pipeline.lib.evaluation.classification import evaluate_classification, load_labels
from finetune_pipeline.lib.data.cleaning import clean, read_split, write_dataset
from finetune_pipeline.lib.training.collate import count_tokens
from finetune_pipeline.lib.config import PipelineConfig
from finetune_pipeline.lib.training.detached import collect_result, detach, forget_checkpoints
from finetune_pipeline.lib.evaluation.backends import EvalBackend, backend_for
from finetune_pipeline.lib.evaluation.scoring import score, write_predictions
from finetune_pipeline.lib.evaluation.generate import strip_assistant
from finetune_pipeline.lib.models.merge import merge_adapter
from finetune_pipeline.lib.data.raw_files import RawDataError, RawRow, list_raw_files, raw_name, read_raw_folder
from finetune_pipeline.lib.training.engine import TrainSpec, child_command, require_cuda_for, training_method
from finetune_pipeline.lib.versions.registry import base_key, lora_key

# Bump a stage's code version when its output for the same inputs changes;
# that (and only that) invalidates the stage's cached artifacts.
CODE_VERSIONS = {
    "raw_examples": "2",  # 2: parse errors carry a rule name; per-line UTF-8; csv module
    "base_model": "1",
    "training_dataset": "2",  # 2: conflicting labels quarantine the whole group
    "lora_adapter": "2",  # 2: padding-free engine, checkpoints, methods, general mix
    "merged_model": "1",
    "eval_set": "1",
    "model_eval": "2",  # 2: eval set artifact, backend in the recipe
}

Log = Callable[[str], None]
# Runs the training child for a spec file and returns its result dict.
Launcher = Callable[[Path], dict[str, Any]]


def _store(cfg: PipelineConfig) -> ArtifactStore:
    return storage.artifact_store(cfg)


def raw_examples(cfg: PipelineConfig, run_id: str | None = None, log: Log = print) -> ArtifactRef:
    """Snapshot every raw file into an immutable artifact (rows.jsonl + file list)."""
    raw_dir = cfg.raw_dir
    files = {raw_name(p, raw_dir): p for p in list_raw_files(raw_dir)}
    file_hashes = {name: hash_file(p) for name, p in files.items()}
    recipe = {"files": file_hashes, "mapping": cfg.section("data")["mapping"], "code": CODE_VERSIONS["raw_examples"]}
    key = recipe_key(recipe)
    store = _store(cfg)
    if hit := store.find("raw_examples", key):
        log(f"cache hit: raw files unchanged, reusing raw_examples/{key}")
        return hit
    rows = read_raw_folder(raw_dir, cfg.data.mapping)
    # The key names the bytes hashed above; a file still being written must not
    # be snapshotted under the hash of its earlier state.
    now = {raw_name(p, raw_dir): p for p in list_raw_files(raw_dir)}
    changed = sorted((set(now) ^ set(files)) | {n for n, p in now.items() if n in files and hash_file(p) != file_hashes[n]})
    if changed:
        raise RawDataError(f"raw file(s) changed while being read: {changed}; run again once they are complete")
    with store.write("raw_examples", key, inputs=[{"asset": "raw file", "path": str(raw_dir / f), "sha256": h}
                                                  for f, h in file_hashes.items()],
                     config={"raw_dir": str(raw_dir), "mapping": recipe["mapping"]},
                     code_version=CODE_VERSIONS["raw_examples"], run_id=run_id) as out:
        with open(out.dir / "rows.jsonl", "w") as f:
            for r in rows:
                f.write(json.dumps(r.__dict__, ensure_ascii=False, default=str) + "\n")
        per_file = {name: sum(1 for r in rows if r.file == name) for name in file_hashes}
        out.info.update(raw_rows=len(rows), files={n: {"sha256": file_hashes[n], "rows": c} for n, c in per_file.items()})
    log(f"raw_examples: {len(rows)} rows from {len(files)} file(s)")
    return out.ref


def base_model_dir(base: ArtifactRef) -> Path:
    """The base model's weights folder (inside the artifact when artifacts are on object storage: pulled)."""
    return Path(base.ensure_local().info["model_dir"])


def load_raw_rows(ref: ArtifactRef) -> list[RawRow]:
    with open(ref.dir / "rows.jsonl") as f:
        return [RawRow(**json.loads(line)) for line in f]


def base_model(cfg: PipelineConfig, run_id: str | None = None, log: Log = print) -> ArtifactRef:
    """Resolve the base model to local safetensors and register it as a version."""
    model = resolve_base_model(cfg.model.base_model, cfg.model_cache_dir)
    recipe = {"spec": model.spec, "content": model.content_hash, "code": CODE_VERSIONS["base_model"]}
    key = recipe_key(recipe)
    store = _store(cfg)
    ref = store.find("base_model", key)
    if ref is None:
        with store.write("base_model", key, inputs=[{"asset": "base model", **model.source}],
                         config=cfg.section("model"), code_version=CODE_VERSIONS["base_model"], run_id=run_id) as out:
            model_dir = model.path
            if store.remote is not None:
                # The model cache is this machine's; with artifacts on object storage the weights travel
                # in the artifact, so a pod that never converted or downloaded the model can pull them.
                shutil.copytree(model.path, out.dir / "model")
                model_dir = store.dir("base_model", key) / "model"
            out.info.update(spec=model.spec, model_dir=str(model_dir), content_hash=model.content_hash,
                            version_key=base_key(model.slug))
            (out.dir / "model_ref.json").write_text(json.dumps({"model_dir": str(model_dir)}) + "\n")
        ref = out.ref
    else:
        log(f"cache hit: base model unchanged, reusing base_model/{key}")
    storage.registry(cfg).register(ref.info["version_key"], "base", path=ref.info["model_dir"],
                                         lineage=ref.path, info={"spec": model.spec})
    return ref


def training_dataset(cfg: PipelineConfig, raw: ArtifactRef, base: ArtifactRef, run_id: str | None = None,
                     log: Log = print) -> ArtifactRef:
    data_cfg = cfg.section("data")
    # The tokenizer decides token lengths, so the base model is part of the recipe.
    recipe = {"raw": raw.key, "tokenizer": base.key, "data": data_cfg, "code": CODE_VERSIONS["training_dataset"]}
    key = recipe_key(recipe)
    store = _store(cfg)
    if hit := store.find("training_dataset", key):
        log(f"cache hit: raw data and rules unchanged, reusing training_dataset/{key}")
        return hit
    tokenizer = load_tokenizer(base_model_dir(base))
    result = clean(load_raw_rows(raw), cfg.data, lambda messages: count_tokens(tokenizer, messages),
                   files=list(raw.info.get("files", {})))
    with store.write("training_dataset", key, inputs=[raw.as_input(), base.as_input()], config=data_cfg,
                     code_version=CODE_VERSIONS["training_dataset"], run_id=run_id) as out:
        stats = write_dataset(result, out.dir)
        out.info.update(stats)
    log(f"training_dataset: kept {stats['kept']} of {stats['raw_rows']} rows {stats['splits']}, "
        f"quarantined {stats['quarantined']} {stats['reasons']}")
    return out.ref


def launch_subprocess(spec_path: Path) -> dict[str, Any]:
    """Run the training child without Dagster (tests, scripts): one process, or N under torchrun."""
    command = child_command(sys.executable, spec_path, TrainSpec.load(spec_path).train)
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"training child failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def training_work_dir(cfg: PipelineConfig, key: str) -> Path:
    """Checkpoints of the training for recipe `key`: outlives a killed child, so a retry resumes."""
    return _store(cfg).root / "lora_adapter" / f".work-{key}"


def lora_adapter(cfg: PipelineConfig, base: ArtifactRef, dataset: ArtifactRef, launch: Launcher = launch_subprocess,
                 run_id: str | None = None, log: Log = print) -> ArtifactRef:
    train_cfg = cfg.section("train")
    require_cuda_for(training_method(train_cfg))  # before anything is loaded or launched
    inputs = [base.as_input(), dataset.as_input()]
    # Where the child runs (subprocess or a k8s pod) does not change what it trains.
    trained = {k: v for k, v in train_cfg.items() if k not in ("runner", "pod")}
    recipe = {"base": base.key, "dataset": dataset.key, "train": trained, "code": CODE_VERSIONS["lora_adapter"]}
    general_file = None
    if cfg.train.general_mix_ratio > 0:
        general_file = cfg.path(cfg.train.general_mix_source)
        if not general_file.is_file():
            raise FileNotFoundError(f"train.general_mix_source: {general_file} does not exist "
                                    f"(train.general_mix_ratio is {cfg.train.general_mix_ratio})")
        general = {"asset": "general instructions", "path": str(general_file), "sha256": hash_file(general_file)}
        inputs.append(general)
        recipe["general"] = general["sha256"]  # the file's content, not its name
    key = recipe_key(recipe)
    store = _store(cfg)
    if hit := store.find("lora_adapter", key):
        log(f"cache hit: base model, dataset and training config unchanged; reusing adapter lora_adapter/{key} "
            f"(trained in run {hit.lineage().get('dagster_run_id')}), no training needed")
        return hit
    work = training_work_dir(cfg, key)
    work.mkdir(parents=True, exist_ok=True)
    with store.write("lora_adapter", key, inputs=inputs, config=train_cfg,
                     code_version=CODE_VERSIONS["lora_adapter"], run_id=run_id) as out:
        detached = store.remote is not None and cfg.train.runner == "k8s"
        if not detached:  # the child reads these folders; a detached pod pulls them itself
            base.ensure_local()
            dataset.ensure_local()
        spec = TrainSpec(
            base_model_dir=base.info["model_dir"],
            train_file=str(Path(dataset.path) / "train.jsonl"),
            val_file=str(Path(dataset.path) / "val.jsonl"),
            output_dir=str(out.dir),
            work_dir=str(work),
            train=train_cfg,
            trust_remote_code=cfg.model.base_model in cfg.model.trust_remote_code_allow,
            general_file=str(general_file) if general_file else None,
        )
        if detached:  # the pod shares no folder with this run: it pulls its inputs, uploads its output
            spec = detach(spec, store.remote, key, [("base_model", base.key), ("training_dataset", dataset.key)])
        spec_path = work / "spec.json"
        spec_path.write_text(json.dumps(spec.__dict__))
        result = launch(spec_path)
        if detached:
            log(f"lora_adapter: {len(collect_result(spec, store.remote, out.dir))} file(s) back from the training pod")
        weights = "model.safetensors" if training_method(train_cfg) == "full" else "adapter_model.safetensors"
        if not any(out.dir.glob(weights.replace(".safetensors", "*.safetensors"))):
            raise RuntimeError(f"training child exited without saving {weights}; checkpoints kept in {work}")
        out.info.update(result)
    # Only a finished artifact retires the checkpoints; a failed attempt leaves them for the retry.
    shutil.rmtree(work, ignore_errors=True)
    if detached:
        forget_checkpoints(spec, store.remote)
    return out.ref


def merged_model(cfg: PipelineConfig, base: ArtifactRef, adapter: ArtifactRef, run_id: str | None = None,
                 log: Log = print) -> ArtifactRef:
    recipe = {"base": base.key, "adapter": adapter.key, "code": CODE_VERSIONS["merged_model"]}
    key = recipe_key(recipe)
    store = _store(cfg)
    ref = store.find("merged_model", key)
    if ref is None:
        with store.write("merged_model", key, inputs=[base.as_input(), adapter.as_input()], config={},
                         code_version=CODE_VERSIONS["merged_model"], run_id=run_id) as out:
            merge_adapter(base_model_dir(base), adapter.dir, out.dir)
            out.info.update(version_key=lora_key(adapter.key))
        ref = out.ref
    else:
        log(f"cache hit: reusing merged_model/{key}")
    storage.registry(cfg).register(ref.info["version_key"], "lora_merged", path=ref.path, lineage=ref.path,
                                         info={"adapter": adapter.path, "base": base.info["spec"]})
    return ref


def eval_set(cfg: PipelineConfig, dataset: ArtifactRef, run_id: str | None = None, log: Log = print) -> ArtifactRef:
    """The test split as its own artifact, keyed by its content hash.

    Its key is the eval set hash on the leaderboard. Every eval depends on it,
    so a changed test split (and only that, not a changed train split) makes
    every model_eval partition stale.
    """
    test_file = dataset.dir / "test.jsonl"
    sha = hash_file(test_file)
    key = sha[:16]  # the eval set's own sha256 prefix, checkable with sha256sum
    store = _store(cfg)
    if hit := store.find("eval_set", key):
        log(f"cache hit: test split unchanged (sha256 {key}), reusing eval_set/{key}")
        return hit
    records = read_split(test_file)
    with store.write("eval_set", key, inputs=[dataset.as_input()], config={},
                     code_version=CODE_VERSIONS["eval_set"], run_id=run_id) as out:
        shutil.copyfile(test_file, out.dir / "test.jsonl")
        out.info.update(rows=len(records), sha256=sha, dataset=dataset.key)
    log(f"eval_set: {len(records)} test rows, sha256 {sha[:16]}")
    return out.ref


def _model_eval_recipe(cfg: PipelineConfig, manifest: dict[str, Any], backend: EvalBackend,
                       eval_set_ref: ArtifactRef) -> dict[str, Any]:
    version_input = {"asset": "model_version", "key": manifest["key"], "path": manifest["lineage"] or manifest["path"]}
    if manifest.get("remote_id"):
        version_input["remote_id"] = manifest["remote_id"]
    recipe = {"version": version_input, "eval_set": eval_set_ref.key, "backend": backend.identity(),
              "generation": {"max_new_tokens": cfg.eval.max_new_tokens, "limit": cfg.eval.limit},
              "code": CODE_VERSIONS["model_eval"]}
    c = cfg.eval.classification
    if c.field:
        # The label set's content, not the file's name, decides the scores.
        recipe["classification"] = {"field": c.field, "constrained": c.constrained,
                                    "labels": hash_file(cfg.path(c.labels_file)) if c.labels_file else "train split"}
    return recipe


def model_eval_key(cfg: PipelineConfig, version_key: str, eval_set_ref: ArtifactRef) -> str:
    """The model_eval artifact key the current config gives this version on this eval set."""
    manifest = storage.registry(cfg).get(version_key)
    return recipe_key(_model_eval_recipe(cfg, manifest, backend_for(cfg, manifest), eval_set_ref))


def model_eval(cfg: PipelineConfig, version_key: str, eval_set_ref: ArtifactRef, run_id: str | None = None,
               log: Log = print) -> ArtifactRef:
    """Evaluate the named version (never "the latest") on the eval set.

    The backend follows the version's kind: OpenAI models through the
    OpenAI-compatible endpoint by their remote id, local ones through
    eval.backend (transformers, vllm, or a server speaking the OpenAI API).
    """
    manifest = storage.registry(cfg).get(version_key)
    backend = backend_for(cfg, manifest)
    recipe = _model_eval_recipe(cfg, manifest, backend, eval_set_ref)
    key = recipe_key(recipe)
    store = _store(cfg)
    if hit := store.find("model_eval", key):
        log(f"cache hit: {version_key} already evaluated on eval set {eval_set_ref.key} with {backend.name}")
        return hit
    storage.registry(cfg).ensure_local(manifest)  # the version's weights, on a machine that has not got them
    test_file = eval_set_ref.dir / "test.jsonl"
    records = read_split(test_file)
    if cfg.eval.limit:
        records = records[: cfg.eval.limit]
    if not records:
        raise ValueError(f"{test_file}: the test split is empty; nothing to evaluate")
    log(f"model_eval[{version_key}]: {len(records)} rows through {backend.identity()}")
    started = time.time()
    predictions = backend.generate([strip_assistant(r["messages"]) for r in records], cfg.eval.max_new_tokens)
    seconds = time.time() - started
    report, rows = score(records, predictions)
    with store.write("model_eval", key, inputs=[recipe["version"], eval_set_ref.as_input()],
                     config={**recipe["generation"], "backend": recipe["backend"],
                             "classification": recipe.get("classification")},
                     code_version=CODE_VERSIONS["model_eval"], run_id=run_id) as out:
        if cfg.eval.classification.field:
            classified = _classify(cfg, backend, records, predictions, eval_set_ref, out.dir, log)
            report["metrics"].update(classified.pop("metrics"))
            report.update(classification={"field": cfg.eval.classification.field, **classified})
        report.update(generation_seconds=round(seconds, 2))
        seconds = time.time() - started
        report.update(version=version_key, kind=manifest["kind"], eval_set=eval_set_ref.key,
                      test_file=str(test_file), backend=recipe["backend"], eval_seconds=round(seconds, 2))
        (out.dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        write_predictions(rows, out.dir / "predictions.jsonl")
        out.info.update(report)
    log(f"model_eval[{version_key}]: {report['metrics']} in {seconds:.1f}s")
    return out.ref


def _classify(cfg: PipelineConfig, backend: EvalBackend, records: list[dict[str, Any]], predictions: list[str],
              eval_set_ref: ArtifactRef, out_dir: Path, log: Log) -> dict[str, Any]:
    """Classification metrics (and constrained generation) merged into the report's metrics."""
    c = cfg.eval.classification
    train_records: list[dict[str, Any]] = []
    if not c.labels_file:
        dataset = _store(cfg).find("training_dataset", eval_set_ref.info["dataset"])
        if dataset is None:
            raise FileNotFoundError(f"eval.classification: the labels come from the training split, but dataset "
                                    f"{eval_set_ref.info['dataset']} is gone; set eval.classification.labels_file")
        train_records = read_split(dataset.dir / "train.jsonl")
    labels = load_labels(cfg.path(c.labels_file) if c.labels_file else None, train_records, c.field)
    result = evaluate_classification(backend, [strip_assistant(r["messages"]) for r in records],
                                     [r["messages"][-1]["content"] for r in records], predictions, c.field, labels,
                                     c.constrained, out_dir, log)
    for note in result["notes"]:
        log(f"model_eval: {note}")
    return {"labels": len(labels), **result}


def sample_val_prompts(dataset: ArtifactRef, n: int = 3) -> list[list[dict[str, str]]]:
    records = read_split(dataset.dir / "val.jsonl") or read_split(dataset.dir / "train.jsonl")
    return [r["messages"] for r in records[:n]]

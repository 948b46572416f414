"""Data stages: raw files snapshotted, the cleaned and split chat dataset, the eval set."""

from __future__ import annotations

import json
import shutil

from finetune_pipeline.lib.config import PipelineConfig
from finetune_pipeline.lib.data.cleaning import clean, read_split, write_dataset
from finetune_pipeline.lib.data.raw_files import (
    RawDataError,
    RawRow,
    list_raw_files,
    raw_name,
    read_raw_folder,
)
from finetune_pipeline.lib.models.base_models import load_tokenizer
from finetune_pipeline.lib.stages.code_versions import CODE_VERSIONS
from finetune_pipeline.lib.stages.common import Log
from finetune_pipeline.lib.stages.common import store as _store
from finetune_pipeline.lib.stages.models import base_model_dir
from finetune_pipeline.lib.storage.artifacts import ArtifactRef
from finetune_pipeline.lib.storage.hashing import hash_file, recipe_key
from finetune_pipeline.lib.training.collate import count_tokens


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


def load_raw_rows(ref: ArtifactRef) -> list[RawRow]:
    with open(ref.dir / "rows.jsonl") as f:
        return [RawRow(**json.loads(line)) for line in f]


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

"""Data stages: the raw files snapshotted, the cleaned and split chat dataset, the eval set."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

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
from finetune_pipeline.lib.stages.common import artifact_key, build_artifact, store
from finetune_pipeline.lib.stages.models import base_model_dir
from finetune_pipeline.lib.storage.artifacts import ArtifactRef
from finetune_pipeline.lib.storage.hashing import hash_file
from finetune_pipeline.lib.training.collate import count_tokens

log = logging.getLogger(__name__)


def raw_examples(cfg: PipelineConfig, run_id: str | None = None) -> ArtifactRef:
    """Every raw file, read through the column mapping, snapshotted as rows.jsonl (lineage: each file's sha256)."""
    raw_dir = cfg.raw_dir
    files = {raw_name(p, raw_dir): p for p in list_raw_files(raw_dir)}
    file_hashes = {name: hash_file(p) for name, p in files.items()}
    mapping = cfg.data.mapping.model_dump(mode="json")
    recipe = {"files": file_hashes, "mapping": mapping}
    # Read before anything is written: a raw file that cannot be read stops the run with nothing half-made.
    hit = store(cfg).find("raw_examples", artifact_key("raw_examples", recipe))
    rows = None if hit else _read_rows(cfg, files, file_hashes)

    def build(out: Path) -> dict:
        nonlocal rows
        rows = rows if rows is not None else _read_rows(cfg, files, file_hashes)  # the hit vanished meanwhile
        with open(out / "rows.jsonl", "w") as f:
            for r in rows:
                f.write(json.dumps(r.__dict__, ensure_ascii=False, default=str) + "\n")
        per_file = {name: sum(1 for r in rows if r.file == name) for name in file_hashes}
        log.info("raw_examples: %d rows from %d file(s)", len(rows), len(files))
        return {"raw_rows": len(rows),
                "files": {n: {"sha256": file_hashes[n], "rows": c} for n, c in per_file.items()}}

    return build_artifact(
        cfg, "raw_examples", build, recipe=recipe,
        inputs=[{"asset": "raw file", "path": str(raw_dir / f), "sha256": h} for f, h in file_hashes.items()],
        config={"raw_dir": str(raw_dir), "mapping": mapping}, unchanged="raw files unchanged", run_id=run_id)


def _read_rows(cfg: PipelineConfig, files: dict[str, Path], file_hashes: dict[str, str]) -> list[RawRow]:
    raw_dir = cfg.raw_dir
    rows = read_raw_folder(raw_dir, cfg.data.mapping)
    # The key names the bytes hashed before; a file still being written must not
    # be snapshotted under the hash of its earlier state.
    now = {raw_name(p, raw_dir): p for p in list_raw_files(raw_dir)}
    changed = sorted((set(now) ^ set(files))
                     | {n for n, p in now.items() if n in files and hash_file(p) != file_hashes[n]})
    if changed:
        raise RawDataError(f"raw file(s) changed while being read: {changed}; run again once they are complete")
    return rows


def load_raw_rows(ref: ArtifactRef) -> list[RawRow]:
    with open(ref.dir / "rows.jsonl") as f:
        return [RawRow(**json.loads(line)) for line in f]


def training_dataset(cfg: PipelineConfig, raw: ArtifactRef, base: ArtifactRef, run_id: str | None = None
                     ) -> ArtifactRef:
    """Raw rows -> validated, deduplicated chat records split into train/val/test, and the quarantine."""
    data_cfg = cfg.section("data")

    def build(out: Path) -> dict:
        tokenizer = load_tokenizer(base_model_dir(base))
        result = clean(load_raw_rows(raw), cfg.data, lambda messages: count_tokens(tokenizer, messages),
                       files=list(raw.info.get("files", {})))
        stats = write_dataset(result, out)
        log.info("training_dataset: kept %s of %s rows %s, quarantined %s %s", stats["kept"], stats["raw_rows"],
                 stats["splits"], stats["quarantined"], stats["reasons"])
        return stats

    # The tokenizer decides token lengths, so the base model is part of the recipe.
    return build_artifact(cfg, "training_dataset", build, recipe={"raw": raw.key, "tokenizer": base.key,
                                                                  "data": data_cfg},
                          inputs=[raw, base], config=data_cfg, unchanged="raw data and rules unchanged",
                          run_id=run_id)


def eval_set(cfg: PipelineConfig, dataset: ArtifactRef, run_id: str | None = None) -> ArtifactRef:
    """The test split as its own artifact, keyed by its content hash.

    Its key is the eval set hash on the leaderboard. Every eval depends on it,
    so a changed test split (and only that, not a changed train split) makes
    every model_eval partition stale.
    """
    test_file = dataset.dir / "test.jsonl"
    sha = hash_file(test_file)

    def build(out: Path) -> dict:
        records = read_split(test_file)
        shutil.copyfile(test_file, out / "test.jsonl")
        log.info("eval_set: %d test rows, sha256 %s", len(records), sha[:16])
        return {"rows": len(records), "sha256": sha, "dataset": dataset.key}

    # The key is the test file's own sha256 prefix, checkable with sha256sum.
    return build_artifact(cfg, "eval_set", build, key=sha[:16], inputs=[dataset],
                          unchanged=f"test split unchanged (sha256 {sha[:16]})", run_id=run_id)

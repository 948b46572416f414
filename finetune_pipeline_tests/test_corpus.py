"""The bad-input corpus: every case of corpus/cases.yaml through the real data stages, checked against its expectation.

Each case is its own raw folder, run through `stages.raw_examples` and
`stages.training_dataset` with the tiny-random model (SmolLM2's real tokenizer
and chat template), exactly as a Dagster run calls them. The blocking case
also runs as a real Dagster job.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from finetune_pipeline.lib import stages
from finetune_pipeline.lib.config import load_config
from finetune_pipeline.lib.data.cleaning import (
    SPLITS,
    inputs_shared_between_splits,
    read_split,
)
from finetune_pipeline.lib.data.raw_files import RawDataError
from finetune_pipeline.lib.storage.artifacts import ArtifactRef
from finetune_pipeline_tests.audit import OpenedFiles
from finetune_pipeline_tests.helpers import write_config
from finetune_pipeline_tests.corpus import make_corpus

CORPUS = Path(__file__).parent / "corpus"
CASES = yaml.safe_load((CORPUS / "cases.yaml").read_text())["cases"]
BY_ID = {c["id"]: c for c in CASES}

# What the issue asks the corpus to hold; each must be named by some case's `covers`.
REQUIRED = [
    "empty file", "BOM", "CRLF", "non-UTF-8 bytes", "truncated last line", "a line that is not an object",
    "missing or empty messages", "unknown role", "null or non-string content", "no assistant turn",
    "output that is not JSON", "output that is JSON but not an object", "a field whose type changes between rows",
    "a 1 MB line", "a token-length overflow", "exact duplicates", "whitespace/case-variant duplicates",
    "the same input with two different outputs (a conflict)", "train/test overlap", "mixed encodings across files",
    "a CSV with a missing label column", "a Parquet file with wrong types", "a symlink leaving the raw folder",
    "a file path with odd characters",
]


def build_case(case_id: str, folder: Path) -> tuple[Path, Path]:
    """The case's raw folder (committed files + test-time ones) and the folder beside it."""
    raw, outside = folder / "raw", folder / "outside"
    shutil.copytree(CORPUS / "files" / case_id, raw, symlinks=True)
    make_corpus.add_runtime_files(case_id, raw, outside)
    return raw, outside


def case_config(case: dict, folder: Path, raw: Path):
    data = {"raw_dir": str(raw), "min_train_rows": 5, "mapping": case.get("mapping", {"format": "seed"}),
            **case.get("data", {})}
    return load_config(write_config(folder, raw, data=data))


def test_corpus_covers_every_listed_kind_of_bad_input():
    assert len(CASES) >= 25 and len(BY_ID) == len(CASES)
    missing = [r for r in REQUIRED if not any(c["covers"].startswith(r) for c in CASES)]
    assert missing == []
    for c in CASES:
        assert c["outcome"] in ("continue", "file_error", "blocked") and c["why"] and c["what"]
        assert (CORPUS / "files" / c["id"]).is_dir(), c["id"]


def test_committed_corpus_is_what_the_generator_writes(tmp_path):
    make_corpus.write_corpus(tmp_path)
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(str(p.relative_to(CORPUS / "files")) for p in (CORPUS / "files").rglob("*") if p.is_file())
    assert written == committed
    frames = {f"{case}/{rel}" for case, files in make_corpus.parquet_files().items() for rel in files}
    for rel in written:
        if rel in frames:
            # Parquet bytes depend on the pyarrow version; the table must be the same.
            pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / rel), pd.read_parquet(CORPUS / "files" / rel))
        else:
            assert (tmp_path / rel).read_bytes() == (CORPUS / "files" / rel).read_bytes(), rel


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_case(case, tmp_path):
    raw_dir, outside = build_case(case["id"], tmp_path)
    cfg = case_config(case, tmp_path, raw_dir)
    if case["outcome"] == "file_error":
        with OpenedFiles() as opened, pytest.raises(RawDataError) as error:
            stages.raw_examples(cfg)
        problems = dict(error.value.problems)
        assert sorted(problems) == sorted(f for f, _ in case["errors"])
        for file, fragment in case["errors"]:
            assert problems[file].startswith(f"{file}: ") and fragment in problems[file]
            assert problems[file] in str(error.value)
        for rel in case.get("never_read", []):
            assert os.path.realpath(outside / rel) not in opened
        assert not (cfg.artifacts_dir / "raw_examples").exists()  # nothing half-made
        return

    raw = stages.raw_examples(cfg)
    base = stages.base_model(cfg)
    dataset = stages.training_dataset(cfg, raw, base)
    assert_dataset_matches(case, raw.dir, dataset.dir)


def assert_dataset_matches(case: dict, raw_dir: Path, dataset_dir: Path) -> None:
    stats = json.loads((dataset_dir / "stats.json").read_text())
    quarantine = read_split(dataset_dir / "quarantine.jsonl")
    assert stats["raw_rows"] == stats["kept"] + stats["quarantined"] == case["raw_rows"]
    assert stats["kept"] == case["kept"] == sum(stats["splits"].values())

    expected = {(f, row): (reason, fragment) for f, row, reason, fragment in case["quarantined"]}
    assert sorted((q["file"], q["row"], q["reason"]) for q in quarantine) == \
        sorted((f, row, reason) for (f, row), (reason, _) in expected.items())
    for q in quarantine:
        reason, fragment = expected[(q["file"], q["row"])]
        assert q["message"].startswith(f"{q['file']} row {q['row']}: {reason}: ")
        assert fragment in q["message"], q["message"]
        assert q["raw"] is not None  # the row itself is kept, to be fixed at the source

    # Nothing lost: every raw row is in exactly one place, a split or the quarantine.
    raw_rows = [(r["file"], r["row"]) for r in read_split(raw_dir / "rows.jsonl")]
    kept = [(s["file"], s["row"]) for s in read_split(dataset_dir / "sources.jsonl")]
    assert sorted(kept + [(q["file"], q["row"]) for q in quarantine]) == sorted(raw_rows)
    assert sum(len(read_split(dataset_dir / f"{s}.jsonl")) for s in SPLITS) == len(kept)
    assert inputs_shared_between_splits(dataset_dir) == {}
    for file, (n, k, nq) in case.get("files", {}).items():
        assert stats["files"][file] == {"raw_rows": n, "kept": k, "quarantined": nq}


@pytest.mark.parametrize("case", [c for c in CASES if c["outcome"] == "blocked"], ids=lambda c: c["id"])
@pytest.mark.slow
def test_blocked_case_stops_at_its_check_in_dagster(case, tmp_path, monkeypatch):
    from finetune_pipeline.definitions import defs

    raw_dir, _ = build_case(case["id"], tmp_path)
    cfg = case_config(case, tmp_path, raw_dir)
    monkeypatch.setenv("FINETUNE_PIPELINE_CONFIG", str(Path(cfg.base_dir) / "config.yaml"))
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("train_and_merge").execute_in_process(instance=instance, raise_on_error=False)
        checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
        assert checks[case["check"]] is False
        assert checks["rows_accounted_for"] is True
        materialized = {m.asset_key.to_user_string() for m in result.asset_materializations_for_node("training_dataset")}
        assert materialized == {"training_dataset"}
        assert result.asset_materializations_for_node("lora_adapter") == []  # training never started
        dataset = result.output_for_node("training_dataset")
        raw = result.output_for_node("raw_examples")
    assert_dataset_matches(case, raw.dir, dataset.dir)


def test_overlap_between_splits_is_caught_by_the_blocking_check(tmp_path):
    """Dedup and hash splitting keep inputs out of two splits; if a dataset ever had one, the check fails."""
    from finetune_pipeline.defs.data import no_input_shared_between_splits

    case = BY_ID["train_test_overlap"]
    raw_dir, _ = build_case(case["id"], tmp_path)
    cfg = case_config(case, tmp_path, raw_dir)
    dataset = stages.training_dataset(cfg, stages.raw_examples(cfg), stages.base_model(cfg))
    assert no_input_shared_between_splits(dataset).passed is True
    doctored = tmp_path / "doctored"
    shutil.copytree(dataset.dir, doctored)
    populated = [s for s in SPLITS if read_split(doctored / f"{s}.jsonl")]
    row = read_split(doctored / f"{populated[0]}.jsonl")[0]
    other = next(s for s in SPLITS if s != populated[0])
    with open(doctored / f"{other}.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    ref = ArtifactRef("training_dataset", dataset.key, str(doctored), info=dataset.info)
    result = no_input_shared_between_splits(ref)
    assert result.passed is False and result.metadata["shared_inputs"].value == 1

"""`finetune-pipeline check-data`: the data rules on any files or folders, checked against the corpus."""

from __future__ import annotations

import json
import subprocess
from collections import Counter

import pytest

from finetune_pipeline import cli
from finetune_pipeline.lib import PROJECT_ROOT
from finetune_pipeline_tests.helpers import SAMPLE_RAW, write_config
from finetune_pipeline_tests.test_corpus import CASES, build_case

SUMMARY_KEYS = {"raw_rows", "kept", "quarantined", "reasons", "files"}


def run(capsys, *args: str) -> tuple[int, list[str], str]:
    code = cli.main(["check-data", *args])
    out, err = capsys.readouterr()
    return code, out.strip().splitlines(), err


def mapping_key(case: dict) -> str:
    return json.dumps(case.get("mapping", {"format": "seed"}), sort_keys=True)


@pytest.mark.parametrize("mapping", sorted({mapping_key(c) for c in CASES if c["outcome"] != "file_error"}))
def test_counts_match_the_corpus_expectations(mapping, tmp_path, capsys):
    """All readable corpus cases of one mapping in one call: every file's and reason's count as cases.yaml says."""
    cases = [c for c in CASES if c["outcome"] != "file_error" and mapping_key(c) == mapping]
    folders = []
    for case in cases:
        raw, _ = build_case(case["id"], tmp_path / case["id"])
        folders.append(str(raw))
    config = write_config(tmp_path, SAMPLE_RAW, data={"mapping": json.loads(mapping)})

    code, lines, err = run(capsys, "--config", str(config), "--examples", "100", *folders)
    assert code == 0 and err == ""
    summary = json.loads(lines[-1])
    assert set(summary) == SUMMARY_KEYS
    assert summary["raw_rows"] == summary["kept"] + summary["quarantined"] == sum(c["raw_rows"] for c in cases)
    assert summary["kept"] == sum(c["kept"] for c in cases)
    assert summary["reasons"] == dict(sorted(Counter(q[2] for c in cases for q in c["quarantined"]).items()))
    for case, folder in zip(cases, folders):
        per_case = {f: v for f, v in summary["files"].items() if f.startswith(folder + "/")}
        assert sum(v["raw_rows"] for v in per_case.values()) == case["raw_rows"]
        assert sum(v["kept"] for v in per_case.values()) == case["kept"]
        for file, (n, k, nq) in case.get("files", {}).items():
            assert per_case[f"{folder}/{file}"] == {"raw_rows": n, "kept": k, "quarantined": nq}
        for file, row, reason, _ in case["quarantined"]:
            # The human part names file, row and rule of every quarantined row (--examples 100).
            prefix = f"{folder}/{file} row {row}: {reason}: "
            assert any(line.strip().startswith(prefix) for line in lines), prefix
    assert not (tmp_path / "artifacts").exists()  # it writes nothing


def test_human_report_has_a_line_per_file_and_per_reason(tmp_path, capsys):
    case = next(c for c in CASES if c["id"] == "non_utf8_bytes")
    raw, _ = build_case(case["id"], tmp_path)
    code, lines, _ = run(capsys, "--config", str(write_config(tmp_path, raw)), str(raw / "tickets.jsonl"))
    assert code == 0
    assert any(line.split() == [str(raw / "tickets.jsonl"), "4", "2", "2"] for line in lines)
    assert any(line.split() == ["not_utf8", "2"] for line in lines)
    assert f"  {raw / 'tickets.jsonl'} row 2: not_utf8: not UTF-8: byte 0xe9" in "\n".join(lines)
    assert json.loads(lines[-1])["files"] == {str(raw / "tickets.jsonl"): {"raw_rows": 4, "kept": 2, "quarantined": 2}}


@pytest.mark.slow
def test_unreadable_input_fails_naming_the_file_and_the_rest_is_still_counted(tmp_path):
    """Through the installed command, as a user runs it: exit 1, the file named, the good file still counted."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "good.jsonl").write_bytes((SAMPLE_RAW / "support_tickets.jsonl").read_bytes().split(b"\n", 3)[0] + b"\n")
    (folder / "broken.parquet").write_text("not parquet")
    missing = tmp_path / "nowhere.csv"
    proc = subprocess.run([str(PROJECT_ROOT / ".venv" / "bin" / "finetune-pipeline"), "check-data",
                           "--config", str(write_config(tmp_path, SAMPLE_RAW)), str(folder), str(missing)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert f"cannot read {folder}/broken.parquet: cannot read it as PARQUET" in proc.stderr
    assert f"cannot read {missing}: no such file or folder" in proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(summary) == SUMMARY_KEYS
    assert summary["files"][f"{folder}/good.jsonl"] == {"raw_rows": 1, "kept": 1, "quarantined": 0}
    assert "PARQUET" in summary["files"][f"{folder}/broken.parquet"]["error"]
    assert summary["raw_rows"] == summary["kept"] == 1


def test_rejected_rows_alone_never_fail_it(tmp_path, capsys):
    case = next(c for c in CASES if c["id"] == "all_rows_rejected")
    raw, _ = build_case(case["id"], tmp_path)
    code, lines, _ = run(capsys, "--config", str(write_config(tmp_path, raw)), str(raw))
    summary = json.loads(lines[-1])
    assert code == 0 and summary["kept"] == 0 and summary["quarantined"] == summary["raw_rows"] == 5


def test_symlink_leaving_a_folder_is_refused_by_name(tmp_path, capsys):
    case = next(c for c in CASES if c["id"] == "symlink_outside")
    raw, _ = build_case(case["id"], tmp_path)
    code, lines, err = run(capsys, "--config", str(write_config(tmp_path, raw)), str(raw))
    assert code == 1
    assert f"cannot read {raw}/linked.jsonl: a symlink to" in err and "outside the raw folder" in err
    summary = json.loads(lines[-1])
    assert summary["files"][f"{raw}/good.jsonl"]["kept"] == 1 and summary["raw_rows"] == 1


def test_config_error_is_reported_not_raised(tmp_path, capsys):
    code, _, err = run(capsys, "--config", str(tmp_path / "missing.yaml"), str(tmp_path))
    assert code == 2 and "config file not found" in err

"""`dg` from the repository root ([tool.dg] in pyproject.toml) loads the same Definitions as `dagster dev`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from finetune_pipeline.definitions import defs
from finetune_pipeline.lib import PROJECT_ROOT

DG = Path(sys.executable).with_name("dg")


def _dg(*args: str) -> subprocess.CompletedProcess:
    # DAGSTER_HOME unset: dg's checks must not depend on an instance the test environment happens to have.
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    return subprocess.run([str(DG), *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_dg_check_defs_passes_from_the_repository_root():
    result = _dg("check", "defs")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All definitions loaded successfully" in result.stdout + result.stderr
    assert "does not match the virtual environment" not in result.stdout + result.stderr  # suppressed, on purpose


def test_dg_list_defs_lists_the_asset_graph():
    result = _dg("list", "defs", "--json")
    assert result.returncode == 0, result.stderr
    listed = {a["asset_key"] for a in json.loads(result.stdout)["assets"]}
    expected = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert listed == expected and "lora_adapter" in listed

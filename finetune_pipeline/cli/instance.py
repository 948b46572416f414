"""The local Dagster instance the commands use."""

from __future__ import annotations

import os
from pathlib import Path

from finetune_pipeline.lib import PROJECT_ROOT


def use_repo_dagster_home() -> Path:
    """A persistent local Dagster instance (SQLite) unless DAGSTER_HOME says otherwise."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / ".dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return home

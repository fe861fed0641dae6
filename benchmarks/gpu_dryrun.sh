#!/usr/bin/env bash
# Dry run of benchmarks/gpu_check.sh on this machine's CPU, set up as the GPU machine is
# (issue 27, A.4):   make gpu-dryrun   (after make gpu-prep)
#
# 1. a fresh venv in .gpu-dryrun/venv (ignored), no --system-site-packages, holding torch
#    from this machine's disk and the packages the GPU image has that the project uses
#    (installed once with plain pip, like that image: it has them, we do not carry them);
# 2. a check that it lacks what is carried (omegaconf, open_clip, ftfy, wcwidth, webdataset,
#    braceexpand) and the project itself;
# 3. gpu_check.sh --device cpu with that venv's python: its install step puts .whl/ into
#    .gpu-dryrun/work/site afresh with pip --no-index (pip's config files and find-links
#    off), then every step runs on the CPU with tiny sizes (1 epoch, 200 images).
# Output: runs/gpu-check-cpu/ (or $OUT). The wheels are for CPython 3.12; this machine's
# python is 3.11: they are pure Python except wcwidth's cp310-abi3 wheel (any CPython >= 3.10).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=.gpu-dryrun
VENV=$ROOT/venv
IMAGE=(torch==2.14.1 torchvision==0.29.1 timm safetensors tensorboard matplotlib scikit-learn
       tqdm pyyaml pillow numpy regex huggingface-hub pytest pytest-timeout)
if [[ ! -f $VENV/.image-installed ]]; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q "${IMAGE[@]}"
  touch "$VENV/.image-installed"
fi
env -u PYTHONPATH "$VENV/bin/python" - <<'PY'
import importlib.util
import sys

carried = ("omegaconf", "open_clip", "ftfy", "wcwidth", "webdataset", "braceexpand", "simsiam")
found = [m for m in carried if importlib.util.find_spec(m)]
if found:
    sys.exit(f"the image emulation in {sys.prefix} already has {found}: not a fair dry run")
print(f"{sys.prefix}: Python {sys.version.split()[0]}, none of {', '.join(carried)}")
PY
rm -rf "$ROOT/work/site"
exec env -u PIP_FIND_LINKS -u PYTHONPATH PIP_CONFIG_FILE=/dev/null PYTHON="$VENV/bin/python" \
  GPU_CHECK_WORK="$ROOT/work" bash benchmarks/gpu_check.sh --device cpu

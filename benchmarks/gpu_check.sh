#!/usr/bin/env bash
# One short GPU check for a session that is lent a device (see DEVELOPERS' guide):
#   run  bash benchmarks/gpu_check.sh   on the device machine (repository root).
# Installs into a fresh venv there, runs the CUDA-only tests, then `simsiam bench` on
# CIFAR-10 ResNet-18 (CIFAR stem, batch 512) eager and compiled. Prints everything.
set -euo pipefail
python3 -m venv .venv-gpu
.venv-gpu/bin/pip install -q -e '.[dev]'
export SIMSIAM_CACHE_DIR=$PWD/.cache
.venv-gpu/bin/python -m pytest -q tests/test_batched_augment.py -k cuda
for compile in false true; do  # 50,000 random 32 px images: CIFAR-10's size, no download
  .venv-gpu/bin/simsiam bench --config cifar10 --synthetic 50000 --device cuda --no-progress \
    --set train.compile=$compile --set train.channels_last=true --steps 20 --windows 5
done

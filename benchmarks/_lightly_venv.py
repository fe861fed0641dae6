"""lightly's own venv for benchmarks/lightly_compare.py: create it once, check it.

``.cache/bench/lightly-venv`` is made with ``python -m venv`` and plain pip, with
``torch==2.14.1 torchvision==0.29.1 lightly``; nothing is done when it already imports
them. lightly is used only as an installed library, from ``_lightly_runner.py``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / ".cache" / "bench"
VENV = BENCH / "lightly-venv"
VPY = VENV / "bin" / "python"
PINS = ["torch==2.14.1", "torchvision==0.29.1", "lightly"]


def venv_ok() -> bool:
    if not VPY.exists():
        return False
    probe = ("import torch, torchvision, lightly; "
             "assert torch.__version__.startswith('2.14.1'), torch.__version__; "
             "assert torchvision.__version__.startswith('0.29.1'), torchvision.__version__")
    return subprocess.run([str(VPY), "-c", probe], capture_output=True).returncode == 0


def setup() -> None:
    if venv_ok():
        print(f"lightly venv ready: {VENV}")
        return
    BENCH.mkdir(parents=True, exist_ok=True)
    if not VPY.exists():
        base = Path(sys.base_prefix) / "bin" / "python3"
        subprocess.run([str(base if base.exists() else "python3"), "-m", "venv", str(VENV)],
                       check=True)
    subprocess.run([str(VPY), "-m", "pip", "install", *PINS], check=True)
    if not venv_ok():
        sys.exit("setup: the lightly venv does not import torch 2.14.1, torchvision 0.29.1 "
                 "and lightly; see pip's output above")
    print(f"lightly venv ready: {VENV}")


def need_venv() -> None:
    if not venv_ok():
        sys.exit(f"no working lightly venv at {VENV}: run "
                 "`python benchmarks/lightly_compare.py setup` first")

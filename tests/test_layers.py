"""The package's floors (docs/ARCHITECTURE.md), enforced by import-linter with the contracts
in pyproject.toml: every import goes down, imports inside functions included; the config
schema and its reading load without torch."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the package under ``root / "src"`` with ``root``'s pyproject.toml."""
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True,
                          text=True, env={"PYTHONPATH": str(root / "src"), "PATH": ""},
                          timeout=300)


def test_every_import_goes_down_a_floor():
    res = _lint(REPO)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Contracts: 3 kept, 0 broken." in res.stdout


def test_an_upward_import_inside_a_function_breaks_the_contract(tmp_path):
    shutil.copytree(REPO / "src" / "simsiam", tmp_path / "src" / "simsiam",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    stats = tmp_path / "src" / "simsiam" / "augment" / "stats.py"
    stats.write_text(stats.read_text() + "\n\ndef upward():\n"
                     "    from simsiam.train.trainer import pretrain\n\n    return pretrain\n")
    res = _lint(tmp_path)
    assert res.returncode == 1
    assert "simsiam.augment is not allowed to import simsiam.train" in res.stdout
    assert "simsiam.augment.stats -> simsiam.train.trainer" in res.stdout
    # the floors, the torch-free config (stats is one of its modules) and, through the
    # weights floor that imports stats, "never import evaluation or training"
    assert "Contracts: 0 kept, 3 broken." in res.stdout


def test_the_config_schema_and_its_reading_load_without_torch():
    code = ("import sys; import simsiam.config.load, simsiam.config.schema; print(sorted(m "
            "for m in ('torch', 'torchvision', 'numpy', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(REPO / "src")}, timeout=120, check=True)
    assert out.stdout.strip() == "[]"

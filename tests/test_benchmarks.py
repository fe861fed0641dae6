"""The benchmark scripts stay runnable: each imports, answers ``--help``, uses only the
package's public API (names in a subpackage's ``__all__``), and the whole tree is lint-clean.

Their measurements are not run here (they take minutes and belong in BENCHMARKS.md).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

BENCH = REPO / "benchmarks"
SCRIPTS = sorted(BENCH.glob("*.py"))


def test_every_benchmark_script_is_covered():
    names = {p.name for p in SCRIPTS}
    assert {"lightly_compare.py", "cpu_step.py", "pipeline_vs_pil.py", "bf16_conv_check.py",
            "_lightly_runner.py", "_ours_runner.py", "_memory.py",
            "_lightly_venv.py", "stream_vs_torchvision.py"} <= names


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_benchmark_imports_and_answers_help(path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # importing runs nothing
    if not hasattr(module, "main"):  # a part with no command line of its own
        assert path.name.startswith("_"), f"{path.name} has no main()"
        return
    monkeypatch.setattr(sys, "argv", [str(path), "--help"])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(path), run_name="__main__")
    assert done.value.code == 0
    assert "usage:" in capsys.readouterr().out


def _simsiam_imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every ``from simsiam... import name`` in ``path``, and
    (module, "") for ``import simsiam...``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("simsiam"):
            out += [(node.module, a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(a.name, "") for a in node.names if a.name.startswith("simsiam")]
    return out


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_benchmarks_use_only_the_public_api(path):
    for module, name in _simsiam_imports(path):
        assert module.count(".") == 1 and name, (
            f"{path.name}: imports {module} {name}: use a name that simsiam.<package> "
            "exports (its __all__)")
        exported = getattr(importlib.import_module(module), "__all__", [])
        assert name in exported, f"{path.name}: {module}.{name} is not in {module}.__all__"


def test_the_public_api_lists_only_names_that_exist():
    for pkg in ("config", "data", "augment", "models", "methods", "train", "distributed"):
        module = importlib.import_module(f"simsiam.{pkg}")
        for name in module.__all__:
            assert getattr(module, name) is not None, f"simsiam.{pkg}.{name}"


def test_lint_is_clean_on_src_tests_and_benchmarks():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "src", "tests", "benchmarks"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_gpu_check_script_parses():
    proc = subprocess.run(["bash", "-n", str(BENCH / "gpu_check.sh")], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr

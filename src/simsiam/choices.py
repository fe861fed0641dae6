"""The command line's choices as plain data, importable without torch, so that
``simsiam --help`` and a bad flag answer before the library loads.

``SCALES``, ``COMPARE_SCALES``, ``TEMPLATE_SETS`` and ``BRUTE_FORCE_MAX`` are defined here
and imported by the modules that use them (:mod:`simsiam.reproduce.runner`,
:mod:`simsiam.reproduce.compare`, :mod:`simsiam.eval.zeroshot`,
:mod:`simsiam.eval.neighbors`). ``EXPERIMENT_NAMES`` are the keys of the registry that holds the
experiments' grids (``simsiam.reproduce.EXPERIMENTS``); ``tests/test_cli_startup.py`` keeps
them equal. The method names come from the torch-free method cards
(``simsiam.methods.settings.CARDS``).
"""

from __future__ import annotations

__all__ = ["BRUTE_FORCE_MAX", "COMPARE_SCALES", "EXPERIMENT_NAMES", "SCALES",
           "TEMPLATE_SETS"]

# the keys of simsiam.reproduce.EXPERIMENTS, in its order
EXPERIMENT_NAMES = ("fig2", "table1", "table2", "table3", "similarity", "symmetry", "dim")
# simsiam reproduce --scale: presets and run lengths (simsiam.reproduce.runner)
SCALES = ("cpu", "cifar10", "imagenet")
# simsiam compare --scale (simsiam.reproduce.compare)
COMPARE_SCALES = ("cpu", "cifar10")
# zero-shot prompt template sets (simsiam.eval.zeroshot)
TEMPLATE_SETS = ("auto", "openai", "cifar", "simple")
# measured: 2.7 s per 100 queries at 1M x 512 on 2 CPU cores (simsiam.eval.neighbors)
BRUTE_FORCE_MAX = 1_000_000

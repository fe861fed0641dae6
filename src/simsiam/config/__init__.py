"""Run configuration: typed sections (:mod:`.schema`, assembled from the sections each layer
owns), YAML presets and overrides (:mod:`.load`, torch-free), the run's resolution and
range checks with clear errors (:mod:`.resolve`, :mod:`.validate`).

Every setting of a run is a key of :class:`Config`; ``configs/*.yaml`` are the presets and
``simsiam pretrain --set KEY=VALUE`` overrides any key.

Public names are imported on first use (PEP 562): ``import simsiam.config`` and
:func:`load_config`'s schema check run without torch; the resolution imports it.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PRESET_DIR": "load", "auto_warmup_epochs": "load", "config_differences": "load",
    "config_to_dict": "load", "config_to_yaml": "load", "fit_warmup": "load",
    "load_config": "load", "preset_names": "load", "read_config": "load",
    "resolve_config_path": "load",
    "AugmentConfig": "schema", "Config": "schema", "DataConfig": "schema",
    "EvalConfig": "schema", "ModelConfig": "schema", "OptimConfig": "schema",
    "TrainConfig": "schema",
    "validate": "validate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'simsiam.config' has no attribute {name!r}")
    return getattr(importlib.import_module(f"simsiam.config.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return __all__

"""Run configuration: typed sections (:mod:`.schema`, assembled from the sections each layer
owns), YAML presets and overrides (:mod:`.load`, torch-free), the run's resolution and
range checks with clear errors (:mod:`.resolve`, :mod:`.validate`).

Every setting of a run is a key of :class:`Config`; ``configs/*.yaml`` are the presets and
``simsiam pretrain --set KEY=VALUE`` overrides any key.

Public names are imported on first use (PEP 562): ``import simsiam.config`` and
:func:`load_config`'s schema check run without torch; the resolution imports it.
"""

from __future__ import annotations

from simsiam.lazy import LazyExports

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

_LAZY = LazyExports(__name__, _EXPORTS)
__getattr__ = _LAZY.attribute
__dir__ = _LAZY.names

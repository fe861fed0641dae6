"""Run configuration: typed sections (:mod:`.schema`), YAML presets and overrides
(:mod:`.load`), range checks with clear errors (:mod:`.validate`).

Every setting of a run is a key of :class:`Config`; ``configs/*.yaml`` are the presets and
``simsiam pretrain --set KEY=VALUE`` overrides any key.
"""

from simsiam.config.load import (
    PRESET_DIR,
    auto_warmup_epochs,
    config_differences,
    config_to_dict,
    config_to_yaml,
    fit_warmup,
    load_config,
    preset_names,
    resolve_config_path,
)
from simsiam.config.schema import (
    AugmentConfig,
    Config,
    DataConfig,
    EvalConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
)
from simsiam.config.validate import validate
from simsiam.methods import METHODS

__all__ = ["AugmentConfig", "Config", "DataConfig", "EvalConfig", "METHODS", "ModelConfig",
           "OptimConfig", "PRESET_DIR", "TrainConfig", "auto_warmup_epochs", "config_differences",
           "config_to_dict",
           "config_to_yaml", "fit_warmup", "load_config", "preset_names",
           "resolve_config_path", "validate"]

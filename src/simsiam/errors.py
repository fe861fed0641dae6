"""Errors raised for bad user input.

Every error names the file, field or value at fault and what to do about it, so a
run is rejected before any work is done rather than failing hours later.
"""

from __future__ import annotations


class SimSiamError(Exception):
    """Base class of the errors this package raises for bad input."""


class ConfigError(SimSiamError, ValueError):
    """A configuration field has a bad value, an unknown key or a wrong type."""


class DataError(SimSiamError, ValueError):
    """A data source is missing, empty, unreadable or too small for the run."""


class CheckpointError(SimSiamError, ValueError):
    """A checkpoint is missing, unreadable or does not fit the model."""


class CollapseError(SimSiamError, RuntimeError):
    """The collapse guard stopped a run (``eval.stop_on_collapse``)."""


class DiskFullError(SimSiamError, OSError):
    """A file could not be written: no space left on device (exit code 5). The file that
    was there before, if any, is unchanged and no temporary file is left."""


class ResourceError(SimSiamError, RuntimeError):
    """A run ran out of a machine resource: memory in a training step, or a DataLoader
    worker killed (the kernel's out-of-memory killer does that) (exit code 6). The message
    is one line naming the settings to lower with their values, the checkpoint kept and
    the command that continues the run (:mod:`simsiam.train.exhaustion`)."""


class DataWarning(UserWarning):
    """Some input was left out of a run (e.g. image files that cannot be decoded)."""


class ConfigNotice(UserWarning):
    """A setting was adapted to the run, and the notice names the value used (e.g. a
    preset's warm-up shortened to fit ``--epochs``)."""


def require(ok: bool, where: str, key: str, value: object, fix: str) -> None:
    """Raise :class:`ConfigError` naming ``where``, ``key`` and ``value`` unless ``ok``.

    Example message: ``configs/x.yaml: optim.base_lr = -0.1 is not allowed: use a positive
    learning rate such as 0.05``.
    """
    if not ok:
        raise ConfigError(f"{where}: {key} = {value!r} is not allowed: {fix}")

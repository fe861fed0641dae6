"""The refusals of :func:`simsiam.train.pretrain` that need no data: the command line
runs them before any image is decoded (the trainer runs them again where it always did).
"""

from __future__ import annotations

from pathlib import Path

from simsiam.config import Config
from simsiam.errors import ConfigError
from simsiam.train.checkpoint import Checkpointer
from simsiam.train.run_dir import check_run_dir, resume_config

__all__ = ["check_before_data", "check_stop_after_epoch", "finished_run_error"]


def check_stop_after_epoch(stop_after_epoch: int | None, epochs: int) -> None:
    """Raises ConfigError: ``stop_after_epoch`` outside 1..``epochs``."""
    if stop_after_epoch is not None and not 1 <= stop_after_epoch <= epochs:
        raise ConfigError(f"--stop-after-epoch {stop_after_epoch}: use an epoch from 1 to "
                          f"train.epochs = {epochs}")


def finished_run_error(out: Path, epochs: int) -> ConfigError:
    """The refusal to resume a run that already trained all ``epochs``."""
    return ConfigError(f"--resume: the run in '{out}' already finished all {epochs} epochs; "
                       "nothing to resume. To train longer, start a new run with another "
                       "--out and more --epochs")


def check_before_data(cfg: Config, resume: bool = False, overwrite: bool = False,
                      stop_after_epoch: int | None = None) -> None:
    """Every check of a pretraining run that needs no data, in the trainer's order:
    ``--stop-after-epoch`` in range, the run directory (:func:`check_run_dir`), and for
    ``resume`` the checkpoint's format, the config against the run's
    (:func:`resume_config`) and whether the run has epochs left. Changes nothing.

    Raises:
        ConfigError / CheckpointError: as the trainer would, naming the same things.
    """
    out = Path(cfg.train.out)
    check_stop_after_epoch(stop_after_epoch, cfg.train.epochs)
    check_run_dir(out, resume, overwrite)
    if not resume:
        return
    ckpt = Checkpointer(out, None).load()  # a newer format is named before the config
    resume_config(cfg, out)
    if int(ckpt.get("epoch", 0)) >= cfg.train.epochs:
        raise finished_run_error(out, cfg.train.epochs)

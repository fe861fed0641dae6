"""The refusals of :func:`simsiam.train.pretrain` that need no data: the command line
runs them before any image is decoded (the trainer runs them again where it always did).
"""

from __future__ import annotations

from pathlib import Path

from simsiam.config import Config
from simsiam.errors import ConfigError
from simsiam.fileio import check_cache_writable, check_writable, display_path
from simsiam.train.checkpoint import Checkpointer
from simsiam.train.run_dir import check_run_dir, resume_config
from simsiam.train.run_lock import check_not_in_use

__all__ = ["check_before_data", "check_output_paths", "check_stop_after_epoch",
           "finished_run_error"]


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


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_output_paths(cfg: Config) -> None:
    """The paths of a run: ``train.out``, ``data.source`` and ``data.cache_dir`` must be
    UTF-8 text (``config.yaml`` records them); and every folder a pretraining run writes
    into is tested writable before the first decode
    (:func:`simsiam.fileio.check_writable`): ``train.out`` and the decoded-image cache
    (``data.cache_dir``, else :func:`~simsiam.fileio.default_cache_dir`).

    Raises:
        ConfigError: one line naming the setting, the path and why (read-only, no
            permission, a file in the way, no space).
    """
    for key, value in (("train.out", cfg.train.out), ("data.source", cfg.data.source),
                       ("data.cache_dir", cfg.data.cache_dir)):
        if value and not _is_utf8(str(value)):  # config.yaml could not be read back
            raise ConfigError(f"{key} = '{display_path(value)}' is not valid UTF-8 (a name "
                              "in another encoding): the run's config.yaml could not hold "
                              "it; rename that folder (the files inside may keep such names)")
    check_writable(cfg.train.out, "--out (train.out)", "choose another --out")
    check_cache_writable(cfg.data.cache_dir)


def check_before_data(cfg: Config, resume: bool = False, overwrite: bool = False,
                      stop_after_epoch: int | None = None,
                      allow_changed_data: bool = False) -> None:
    """Every check of a pretraining run that needs no data, in the trainer's order:
    ``--stop-after-epoch`` in range, the folders it writes (:func:`check_output_paths`),
    the run directory (:func:`check_run_dir`, and that no live run holds it), and for
    ``resume`` the checkpoint's format, the config against the run's
    (:func:`resume_config`) and whether the run has epochs left. Changes nothing.

    Raises:
        ConfigError / CheckpointError: as the trainer would, naming the same things.
    """
    out = Path(cfg.train.out)
    check_stop_after_epoch(stop_after_epoch, cfg.train.epochs)
    check_output_paths(cfg)
    check_run_dir(out, resume, overwrite)
    if allow_changed_data and not resume:
        raise ConfigError("--allow-changed-data goes with --resume (a new run records the "
                          "data as they are); drop it, or add --resume")
    check_not_in_use(out)
    if not resume:
        return
    ckpt = Checkpointer(out, None).load()  # a newer format is named before the config
    resume_config(cfg, out)
    if int(ckpt.get("epoch", 0)) >= cfg.train.epochs:
        raise finished_run_error(out, cfg.train.epochs)

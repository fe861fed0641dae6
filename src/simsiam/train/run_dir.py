"""The run directory: refuse to clobber a run, clear one for --overwrite, check --resume.

A run directory holds ``RUN_FILES``. Nothing in it is touched before the new run's
settings, data and model have all been checked (the trainer calls :func:`clear_run_dir`
only then), and ``--resume`` continues only the run whose ``config.yaml`` matches.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

from simsiam.config import Config, config_differences, config_to_yaml, load_config
from simsiam.data.fingerprint import data_changes, data_record, held_out_names, split_moves
from simsiam.data.types import DataSplits
from simsiam.errors import ConfigError, DataError, DataWarning
from simsiam.fileio import atomic_write
from simsiam.launch import resume_command
from simsiam.train.logger import read_metrics

DATA_RECORD = "data.json"  # what the run trains and evaluates on (simsiam.data.fingerprint)
RUN_FILES = ("config.yaml", DATA_RECORD, "metrics.jsonl", "tb", "checkpoints",
             "backbone.safetensors", "backbone_init.safetensors", "text_tower.safetensors",
             "text_tower_init.safetensors",
             "report")


def check_run_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """Check the output directory before any work; changes nothing.

    Raises:
        ConfigError: ``out`` is a file; resuming without a checkpoint and config.yaml; or a
            directory that holds another run without ``--resume`` or ``--overwrite``.
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output path '{out}' is a file; choose a directory for --out")
    if resume and overwrite:
        raise ConfigError("--resume continues the run in --out and --overwrite replaces it; "
                          "give one of them")
    if resume:
        for need in ("checkpoints/last.pt", "config.yaml"):
            if not (out / need).is_file():
                raise ConfigError(f"--resume: '{out}' has no {need} to resume from (the run "
                                  "stopped before its first epoch ended, or never started); "
                                  "start it again with --overwrite, or drop --resume")
        return
    present = [name for name in RUN_FILES if (out / name).exists()]
    if present and not overwrite:
        if (out / "checkpoints" / "last.pt").is_file():
            hint = "pass --resume to continue it, --overwrite to replace it"
        else:  # stopped before its first checkpoint: nothing to resume
            hint = "it has no checkpoint to resume from: pass --overwrite to replace it"
        raise ConfigError(f"output directory '{out}' already holds a run ({', '.join(present)});"
                          f" {hint}, or choose another --out")


def clear_run_dir(out: Path) -> None:
    """Remove the files of a previous run (only those; anything else in ``out`` stays)."""
    for name in RUN_FILES:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    out.mkdir(parents=True, exist_ok=True)


def start_run_dir(out: Path, cfg: Config, splits: DataSplits) -> None:
    """Start a new run in ``out``: clear a previous run's files (:func:`clear_run_dir`:
    called only once every check that can refuse the run has passed), then write
    ``config.yaml`` and ``data.json`` (atomically)."""
    clear_run_dir(out)
    text = config_to_yaml(cfg)
    atomic_write(out / "config.yaml", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    write_data_record(out, splits)


# Keys that may differ on --resume: they do not change what is computed.
_RESUME_FREE = {("train", "out"), ("train", "device"), ("train", "log_every"),
                ("train", "save_every"), ("data", "num_workers"), ("data", "cache_dir"),
                ("data", "strict")}


def resume_config(cfg: Config, out: Path) -> Config:
    """``cfg`` when it matches the run's ``config.yaml`` except for keys that do not change
    what is computed (output paths, device, workers, logging, ``eval.*``, the sections of
    methods other than the run's).

    Raises:
        ConfigError: naming every key that differs, with both values.
    """
    saved = load_config(out / "config.yaml")
    free = {f"{s}.{k}" for s, k in _RESUME_FREE}
    diff = [d for d in config_differences(saved, cfg)
            if d.split(":")[0] not in free and not d.startswith("eval.")]
    if diff:
        raise ConfigError(f"--resume: the config differs from the run in '{out}' "
                          f"({'; '.join(diff)}). --resume continues the same schedule, so "
                          f"resume with the run's own settings ({resume_command(out)}); "
                          "to train longer or differently, start a "
                          "new run with another --out (the cosine schedule depends on the "
                          "total length from the first step)")
    return cfg


def truncate_metrics(out: Path, last_step: int) -> None:
    """Drop records written after the checkpoint at ``last_step`` (an interrupted epoch),
    and a last line cut short by a crash (with the warning of :func:`read_metrics`), so the
    resumed run appends whole lines after whole lines."""
    path = out / "metrics.jsonl"
    if not path.exists():
        return
    keep = [json.dumps(r) for r in read_metrics(out) if r.get("step", 0) <= last_step]
    atomic_write(path, lambda tmp: tmp.write_text("".join(f"{x}\n" for x in keep),
                                                  encoding="utf-8"))


def write_data_record(out: Path, splits: DataSplits) -> None:
    """Write ``RUN/data.json``: the fingerprint of the run's splits (atomically)."""
    text = json.dumps(data_record(splits))
    atomic_write(out / DATA_RECORD, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_data_record(out: Path) -> dict[str, Any] | None:
    """The run's ``data.json``, or None for a run started before simsiam recorded it."""
    path = out / DATA_RECORD
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"--resume: '{path}' cannot be read ({exc}); restore it, or start "
                        "a new run with another --out") from None


def resume_held_out(out: Path) -> frozenset[str] | None:
    """The held-out names a resumed run keeps (so that a folder's split does not move when
    images were added), or None (no record, or too many names kept)."""
    record = read_data_record(out)
    return held_out_names(record) if record else None


def check_resume_data(out: Path, splits: DataSplits, allow_changed_data: bool,
                      write: bool = True) -> None:
    """Refuse to resume on data other than the run's (``RUN/data.json``), unless
    ``allow_changed_data``: then warn naming what changed and record the data as it is
    now. The held-out split may never move: images trained on that are now held out (or
    the reverse) are refused either way. A run without ``data.json`` (older simsiam) gets
    a warning that its data cannot be checked, and the record is written now. ``write``:
    whether this process writes ``data.json`` (rank 0 under torchrun).

    Raises:
        DataError: the data changed (names the changes and the choices), or the split moved.
    """
    old = read_data_record(out)
    if old is None:
        warnings.warn(DataWarning(f"--resume: '{out}' has no {DATA_RECORD} (the run was "
                                  "started by an older simsiam): its data cannot be checked; "
                                  "they are recorded now"), stacklevel=2)
        if write:
            write_data_record(out, splits)
        return
    new = data_record(splits)
    changes = data_changes(old, new)
    into_test, into_train = split_moves(old, new)
    if changes and not allow_changed_data:
        raise DataError(f"--resume: the data of the run in '{out}' changed since it started "
                        f"({'; '.join(changes)}); --resume continues on the images the run "
                        "started with: restore them, or pass --allow-changed-data to continue "
                        "on the data as it is now (held-out images stay held out), or start "
                        "a new run with another --out")
    if into_test or into_train:
        raise DataError(f"--resume: the held-out split of the run in '{out}' would move "
                        f"({len(into_test)} images trained on would be held out, "
                        f"{len(into_train)} held-out images trained on, e.g. "
                        f"{(into_test + into_train)[:2]}): the monitor would score images the "
                        "encoder trained on, and this source draws its split anew. Restore the "
                        "data as it was, or start a new run with another --out")
    if changes:
        warnings.warn(DataWarning("--resume --allow-changed-data: continuing on changed data "
                                  f"({'; '.join(changes)}); held-out images stay held out"),
                      stacklevel=2)
        if write:
            write_data_record(out, splits)

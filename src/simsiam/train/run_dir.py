"""The run directory: refuse to clobber a run, clear one for --overwrite, check --resume.

A run directory holds ``RUN_FILES``. Nothing in it is touched before the new run's
settings, data and model have all been checked (the trainer calls :func:`clear_run_dir`
only then), and ``--resume`` continues only the run whose ``config.yaml`` matches.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from simsiam.config import Config, config_differences, load_config
from simsiam.errors import ConfigError
from simsiam.fileio import atomic_write

RUN_FILES = ("config.yaml", "metrics.jsonl", "tb", "checkpoints", "backbone.safetensors",
             "backbone_init.safetensors", "text_tower.safetensors", "text_tower_init.safetensors",
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
                          "resume with the run's own settings (--config "
                          f"{out / 'config.yaml'}); to train longer or differently, start a "
                          "new run with another --out (the cosine schedule depends on the "
                          "total length from the first step)")
    return cfg


def truncate_metrics(out: Path, last_step: int) -> None:
    """Drop records written after the checkpoint at ``last_step`` (an interrupted epoch)."""
    path = out / "metrics.jsonl"
    if not path.exists():
        return
    keep = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= last_step]
    atomic_write(path, lambda tmp: tmp.write_text("".join(f"{x}\n" for x in keep),
                                                  encoding="utf-8"))

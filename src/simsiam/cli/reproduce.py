"""``simsiam reproduce EXPERIMENT ...`` and ``simsiam compare --methods ... --budget N ...``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from simsiam.compile_cache import use_compile_cache
from simsiam.config.overrides import parse_set
from simsiam.errors import ConfigError
from simsiam.fileio import check_writable
from simsiam.reproduce.compare import default_methods, format_compare, run_compare
from simsiam.reproduce.experiments import EXPERIMENTS
from simsiam.reproduce.runner import format_table, run_experiment
from simsiam.train.demo import default_image_data

__all__ = ["cmd_compare", "cmd_reproduce", "grid_overrides"]


def cmd_reproduce(args: argparse.Namespace) -> int:
    """Run an experiment's rows and print its table beside the paper's."""
    if args.data is None and args.scale == "imagenet":
        raise ConfigError("--scale imagenet needs --data: an ImageNet folder with train/ and "
                          "val/ inside")
    data = default_image_data(args.data)
    extra = grid_overrides(args)
    check_writable(args.out, "--out", "choose another --out")
    use_compile_cache()
    results = run_experiment(args.experiment, args.scale, data, args.out,
                             overwrite=args.overwrite, progress=not args.no_progress,
                             linear=not args.no_linear, extra=extra)
    root = Path(args.out) / args.experiment
    print(format_table(EXPERIMENTS[args.experiment], args.scale, results))
    print(f"reproduce: table {root / 'table.md'}, plot {root / (args.experiment + '.png')}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Train several methods under one budget and print them side by side."""
    data = default_image_data(args.data)
    methods = ([m.strip() for m in args.methods.split(",") if m.strip()] if args.methods
               else default_methods(data))
    extra = grid_overrides(args)
    check_writable(args.out, "--out", "choose another --out")
    use_compile_cache()
    rows = run_compare(methods, args.budget, args.scale, data, args.out,
                       overwrite=args.overwrite, progress=not args.no_progress,
                       linear=not args.no_linear, extra=extra)
    print(format_compare(rows, args.scale, args.budget))
    out = Path(args.out)
    print(f"compare: table {out / 'compare.md'}, plot {out / 'compare.png'}")
    return 0


def grid_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``--device`` and ``--set`` as overrides applied to every run, after the scale's
    preset and the row's or method's own settings.

    Raises:
        ConfigError: a malformed ``--set``.
    """
    extra = parse_set(args.set or [])
    if args.device:
        extra["train.device"] = args.device
    return extra

"""``simsiam reproduce EXPERIMENT ...`` and ``simsiam compare --methods ... --budget N ...``."""

from __future__ import annotations

import argparse
from pathlib import Path

from simsiam import cliflags
from simsiam.errors import ConfigError
from simsiam.reproduce.experiments import EXPERIMENTS
from simsiam.reproduce.runner import SCALES

# The workplace's CIFAR-10 JPEG copy beside the checkout, else torchvision's download.
SHARED_CIFAR_DIR = Path("..") / "shared" / "data" / "cifar10-jpeg"


def cmd_reproduce(args: argparse.Namespace) -> int:
    from simsiam.reproduce.runner import format_table, run_experiment

    if args.data is None and args.scale == "imagenet":
        raise ConfigError("--scale imagenet needs --data: an ImageNet folder with train/ and "
                          "val/ inside")
    data = _default_data(args.data)
    extra = _extra(args)
    results = run_experiment(args.experiment, args.scale, data, args.out,
                             overwrite=args.overwrite, progress=not args.no_progress,
                             linear=not args.no_linear, extra=extra)
    root = Path(args.out) / args.experiment
    print(format_table(EXPERIMENTS[args.experiment], args.scale, results))
    print(f"reproduce: table {root / 'table.md'}, plot {root / (args.experiment + '.png')}")
    return 0


def _default_data(data: str | None) -> str:
    if data is not None:
        return data
    return str(SHARED_CIFAR_DIR) if SHARED_CIFAR_DIR.is_dir() else "cifar10"


def cmd_compare(args: argparse.Namespace) -> int:
    from simsiam.reproduce.compare import default_methods, format_compare, run_compare

    data = _default_data(args.data)
    methods = ([m.strip() for m in args.methods.split(",") if m.strip()] if args.methods
               else default_methods(data))
    extra = _extra(args)
    rows = run_compare(methods, args.budget, args.scale, data, args.out,
                       overwrite=args.overwrite, progress=not args.no_progress,
                       linear=not args.no_linear, extra=extra)
    print(format_compare(rows, args.scale, args.budget))
    out = Path(args.out)
    print(f"compare: table {out / 'compare.md'}, plot {out / 'compare.png'}")
    return 0


def _extra(args: argparse.Namespace) -> dict:
    """``--device`` and ``--set`` as overrides applied to every run, after the scale's
    preset and the row's or method's own settings."""
    from simsiam.cli import _parse_set

    extra = _parse_set(args.set or [])
    if args.device:
        extra["train.device"] = args.device
    return extra


def _add_grid_flags(p: argparse.ArgumentParser, out: str, out_help: str) -> None:
    p.add_argument("--data", help="image folder or cifar10 (default: ../shared/data/"
                   "cifar10-jpeg when present, else torchvision's CIFAR-10)")
    p.add_argument("--out", default=out, help=out_help)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"))
    p.add_argument("--overwrite", action="store_true",
                   help="replace run directories holding another or unfinished run")
    p.add_argument("--no-linear", action="store_true", help="skip the linear probe per run")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="a config override for every run (repeatable), e.g. --set "
                   "train.seed=1 (compare: --set optim.method_optimizer=true gives each "
                   "method its authors' optimizer at the cpu scale)")


def add_compare_parser(sub) -> None:
    """Register the ``compare`` subcommand."""
    from simsiam.methods import METHODS
    from simsiam.reproduce.compare import COMPARE_SCALES

    p = sub.add_parser("compare", help="train several methods under the same budget and "
                       "tabulate them side by side")
    p.add_argument("--methods", help=f"comma-separated, from {', '.join(METHODS)} (default: "
                   "all; clip only when --data has captions)")
    p.add_argument("--budget", type=cliflags.EPOCHS, required=True, help="epochs for every method")
    p.add_argument("--scale", choices=COMPARE_SCALES, default="cpu",
                   help="cpu: the demo preset on 10,000 images; cifar10: the paper's CIFAR "
                   "preset (GPU)")
    _add_grid_flags(p, "runs/compare", "one run directory per method")
    p.set_defaults(func=cmd_compare)


def add_parser(sub) -> None:
    """Register the ``reproduce`` subcommand on the main parser's subparsers."""
    p = sub.add_parser("reproduce", help="run one of the paper's experiments and tabulate "
                       "our numbers beside the paper's")
    p.add_argument("experiment", choices=tuple(EXPERIMENTS),
                   help="fig2 (stop-gradient), table1 (predictor), table2 (batch size), "
                   "table3 (BN in the heads), similarity, symmetry, dim (output dimension)")
    p.add_argument("--scale", choices=SCALES, default="cpu",
                   help="cpu: ~10 min per experiment on 2 cores (default); cifar10: the "
                   "paper's CIFAR recipe; imagenet: the paper's ImageNet recipe")
    _add_grid_flags(p, "runs/reproduce", "rows go to OUT/EXPERIMENT/<row>")
    p.set_defaults(func=cmd_reproduce)

"""``simsiam reproduce EXPERIMENT [--scale cpu|cifar10|imagenet] [--data DIR] [--out DIR]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from simsiam.errors import ConfigError
from simsiam.reproduce.experiments import EXPERIMENTS
from simsiam.reproduce.runner import SCALES

# The workplace's CIFAR-10 JPEG copy beside the checkout, else torchvision's download.
SHARED_CIFAR_DIR = Path("..") / "shared" / "data" / "cifar10-jpeg"


def cmd_reproduce(args: argparse.Namespace) -> int:
    from simsiam.reproduce.runner import format_table, run_experiment

    data = args.data
    if data is None:
        if args.scale == "imagenet":
            raise ConfigError("--scale imagenet needs --data: an ImageNet folder with train/ "
                              "and val/ inside")
        data = str(SHARED_CIFAR_DIR) if SHARED_CIFAR_DIR.is_dir() else "cifar10"
    extra = {"train.device": args.device} if args.device else {}
    results = run_experiment(args.experiment, args.scale, data, args.out,
                             overwrite=args.overwrite, progress=not args.no_progress,
                             linear=not args.no_linear, extra=extra)
    root = Path(args.out) / args.experiment
    print(format_table(EXPERIMENTS[args.experiment], args.scale, results))
    print(f"reproduce: table {root / 'table.md'}, plot {root / (args.experiment + '.png')}")
    return 0


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
    p.add_argument("--data", help="image folder or cifar10 (default: ../shared/data/"
                   "cifar10-jpeg when present, else torchvision's CIFAR-10)")
    p.add_argument("--out", default="runs/reproduce", help="rows go to OUT/EXPERIMENT/<row>")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"))
    p.add_argument("--overwrite", action="store_true",
                   help="replace row directories holding another or unfinished run")
    p.add_argument("--no-linear", action="store_true", help="skip the linear probe per row")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_reproduce)

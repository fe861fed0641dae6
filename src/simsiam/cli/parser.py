"""``simsiam``'s argument parser, built from torch-free modules only: a bad flag or
``--help`` answers before the library loads. Each subcommand's ``func`` is a
:class:`~simsiam.cli.flags.Handler` naming the module and function that run it, imported
after parsing."""

from __future__ import annotations

import argparse

from simsiam.choices import COMPARE_SCALES, EXPERIMENT_NAMES, SCALES
from simsiam.cli import flags
from simsiam.cli.eval_parsers import add_eval_parsers
from simsiam.cli.flags import METHOD_NAMES, Handler, add_grid_flags, add_run_flags, subparser

__all__ = ["DESCRIPTION", "build_parser"]

DESCRIPTION = ("Self-supervised image encoders: pretrain, demo, bench, knn, linear, embed, "
               "neighbors, report, reproduce, compare, retrieval, zeroshot, shard, describe")
# the modules that run the subcommands, imported after parsing
TRAIN, TOOLS, REPRODUCE = "simsiam.cli.train", "simsiam.cli.tools", "simsiam.cli.reproduce"


def build_parser() -> argparse.ArgumentParser:
    """The ``simsiam`` parser with every subcommand; abbreviated long flags are refused."""
    parser = argparse.ArgumentParser(prog="simsiam", description=DESCRIPTION,
                                     allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True,
                                parser_class=flags.CommandParser)
    _add_train_parsers(sub)
    add_eval_parsers(sub)
    _add_tool_parsers(sub)
    _add_grid_parsers(sub)
    p = subparser(sub, "describe", help="parameter counts per part of the model")
    p.add_argument("--config", required=True)
    p.add_argument("--method", choices=METHOD_NAMES,
                   help="default: the config's (simsiam)")
    p.set_defaults(func=Handler(TOOLS, "cmd_describe"))
    return parser


def _add_train_parsers(sub) -> None:
    p = subparser(sub, "pretrain", help="self-supervised pretraining")
    p.add_argument("--config", required=True, help="YAML preset, e.g. configs/cifar10.yaml")
    add_run_flags(p)
    p.set_defaults(func=Handler(TRAIN, "cmd_pretrain"))
    p = subparser(sub, "demo", help="CPU demo on real CIFAR-10 images (configs/demo-cpu.yaml);"
                  " --method clip: on 1,000 captioned Flickr photos (configs/clip-cpu.yaml)")
    p.add_argument("--config", help="preset (default configs/demo-cpu.yaml; for --method clip "
                   "configs/clip-cpu.yaml)")
    add_run_flags(p)
    p.set_defaults(func=Handler(TRAIN, "cmd_demo"))
    p = subparser(sub, "bench", help="images/s of the data pipeline, the model step and the "
                  "full training step; peak memory; MFU on GPU")
    p.add_argument("--config", help="preset (default configs/demo-cpu.yaml)")
    add_run_flags(p)
    p.add_argument("--steps", type=flags.POSITIVE_INT, default=5, help="steps per timed window")
    p.add_argument("--windows", type=flags.POSITIVE_INT, default=5,
                   help="timed windows (median reported)")
    p.add_argument("--warmup", type=flags.COUNT, default=3, help="untimed steps first")
    p.add_argument("--synthetic", type=flags.SYNTHETIC, default=0, metavar="N",
                   help="N random images of the view size instead of --data")
    p.set_defaults(func=Handler(TRAIN, "cmd_bench"))


def _add_tool_parsers(sub) -> None:
    p = subparser(sub, "shard", help="write an image folder into WebDataset shards (labels "
                  "and the train/test split kept), for --data 'OUT/shard-{...}.tar'")
    p.add_argument("folder", help="image folder (class subfolders; train/ and test/ kept)")
    p.add_argument("out", help="folder for the shards (nothing in it is replaced)")
    p.add_argument("--shard-size", type=flags.POSITIVE_INT, default=1000, metavar="N",
                   help="samples per shard (default 1000)")
    p.add_argument("--strict", action="store_true",
                   help="stop on the first file whose header cannot be read")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=Handler(TOOLS, "cmd_shard"))
    p = subparser(sub, "report", help="PNG plots and a markdown summary of a run")
    p.add_argument("run", help="run directory")
    p.add_argument("--points", type=flags.COUNT, default=2000,
                   help="held-out images in the t-SNE map (0: no map)")
    p.set_defaults(func=Handler(TOOLS, "cmd_report"))


def _add_grid_parsers(sub) -> None:
    p = subparser(sub, "reproduce", help="run one of the paper's experiments and tabulate "
                  "our numbers beside the paper's")
    p.add_argument("experiment", choices=EXPERIMENT_NAMES,
                   help="fig2 (stop-gradient), table1 (predictor), table2 (batch size), "
                   "table3 (BN in the heads), similarity, symmetry, dim (output dimension)")
    p.add_argument("--scale", choices=SCALES, default="cpu",
                   help="cpu: ~10 min per experiment on 2 cores (default); cifar10: the "
                   "paper's CIFAR recipe; imagenet: the paper's ImageNet recipe")
    add_grid_flags(p, "runs/reproduce", "rows go to OUT/EXPERIMENT/<row>")
    p.set_defaults(func=Handler(REPRODUCE, "cmd_reproduce"))
    p = subparser(sub, "compare", help="train several methods under the same budget and "
                  "tabulate them side by side")
    p.add_argument("--methods", help=f"comma-separated, from {', '.join(METHOD_NAMES)} "
                   "(default: all; clip only when --data has captions)")
    p.add_argument("--budget", type=flags.EPOCHS, required=True, help="epochs for every method")
    p.add_argument("--scale", choices=COMPARE_SCALES, default="cpu",
                   help="cpu: the demo preset on 10,000 images; cifar10: the paper's CIFAR "
                   "preset (GPU)")
    add_grid_flags(p, "runs/compare", "one run directory per method")
    p.set_defaults(func=Handler(REPRODUCE, "cmd_compare"))

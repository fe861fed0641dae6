"""The command line's flags: numeric types checked against the ranges of the config keys
they stand for (:mod:`simsiam.config.validate`), and the blocks of flags that several
subcommands share, each written once. Torch-free: the parser is built and checked before
the library loads.

Each numeric flag's ``type=`` is a :class:`Bounded`: argparse calls it on the text, and a
value out of range (or not a number) stops the command with exit code 2 and ``argument
--k: 0 is out of range: use an integer >= 1 (eval.knn_k)``, naming the flag, the value and
the allowed range.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import math
from typing import Any

from simsiam.methods.settings import CARDS

# the methods a run may name: the registry's keys, from the torch-free method cards
METHOD_NAMES = tuple(CARDS)


class Bounded:
    """An argparse ``type``: an int or float within ``[low, high]`` (an end is open with
    ``low_open`` / ``high_open``; None: unbounded).

    Args:
        kind: ``int`` or ``float``.
        low, high: the bounds.
        key: the config key the flag stands for, named in the message.

    Calling it with the flag's text returns the number.

    Raises:
        argparse.ArgumentTypeError: not a number of ``kind``, not finite, or out of range.
    """

    def __init__(self, kind: type, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, key: str = "") -> None:
        self.kind, self.low, self.high = kind, low, high
        self.low_open, self.high_open, self.key = low_open, high_open, key
        self.__name__ = kind.__name__  # argparse names the type in its own messages

    def words(self) -> str:
        """The allowed range in words: ``an integer >= 1``, ``a number > 0``,
        ``a number in [0, 1)``."""
        what = "an integer" if self.kind is int else "a number"
        if self.low is not None and self.high is not None:
            return (f"{what} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                    f"{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"{what} {'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{what} {'<' if self.high_open else '<='} {self.high:g}"
        return what

    def __call__(self, text: str) -> int | float:
        where = f" ({self.key})" if self.key else ""
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {self.words()}{where}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text} is not a finite number: use "
                                             f"{self.words()}{where}")
        bad = False
        if self.low is not None:
            bad |= value <= self.low if self.low_open else value < self.low
        if self.high is not None:
            bad |= value >= self.high if self.high_open else value > self.high
        if bad:
            raise argparse.ArgumentTypeError(f"{text} is out of range: use {self.words()}{where}")
        return value


# The flags' ranges: those of the config keys (simsiam.config.validate).
POSITIVE_INT = Bounded(int, 1)
EPOCHS = Bounded(int, 1, key="train.epochs")
BATCH = Bounded(int, 2, key="train.batch_size")
PER_CLASS = Bounded(int, 1, key="data.per_class")
TEST_PER_CLASS = Bounded(int, 1, key="data.test_per_class")
SEED = Bounded(int, 0, 2**63 - 1, key="train.seed")
IMAGE_SIZE = Bounded(int, 8, 4096, key="data.image_size")
HOLDOUT = Bounded(float, 0.0, 1.0, high_open=True, key="data.holdout_fraction")
KNN_K = Bounded(int, 1, key="eval.knn_k")
KNN_T = Bounded(float, 0.0, low_open=True, key="eval.knn_t")
POSITIVE_FLOAT = Bounded(float, 0.0, low_open=True)
LINEAR_BATCH = Bounded(int, 2)  # the fast probe's BatchNorm needs 2 samples
COUNT = Bounded(int, 0)  # zero or more
SYNTHETIC = Bounded(int, 0, 1_000_000)  # bench --synthetic: random images held in memory


class Handler:
    """A subcommand's function, named by module and function and imported only when the
    command runs (after its flags were parsed): ``set_defaults(func=Handler(...))``, then
    ``args.func(args)``.

    Args:
        module: e.g. ``simsiam.cli.train``.
        name: the function in it, e.g. ``cmd_pretrain``; it takes the parsed arguments and
            returns the exit code.
    """

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, args: argparse.Namespace) -> Any:
        return getattr(importlib.import_module(self.module), self.name)(args)

    def __repr__(self) -> str:
        return f"Handler({self.module!r}, {self.name!r})"


class CommandParser(argparse.ArgumentParser):
    """A subcommand's parser that answers an unknown flag itself: its own usage line, the
    flag named, and the nearest of its flags (``--epoch``: did you mean ``--epochs``?).
    Without it argparse hands unknown flags up to ``simsiam``'s parser, whose message
    names no subcommand."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.flag_names: list[str] = []
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.flag_names.extend(action.option_strings)
        return action

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        parsed, extra = super().parse_known_args(args, namespace)
        if extra:
            self.error(unknown_flags_message(extra, self.flag_names))
        return parsed, extra


def unknown_flags_message(extra: list[str], flag_names: list[str]) -> str:
    """``unrecognized arguments: --epoch 5 (did you mean --epochs?)`` for the arguments
    ``extra`` a parser with the flags ``flag_names`` did not take."""
    message = "unrecognized arguments: " + " ".join(extra)
    names = {f.lstrip("-"): f for f in flag_names if f.startswith("--")}
    typed = [a.partition("=")[0].lstrip("-") for a in extra if a.startswith("--")]
    near = [names[m] for a in typed for m in difflib.get_close_matches(a, list(names), n=1)]
    return message + (f" (did you mean {', '.join(near)}?)" if near else "")


def subparser(sub: Any, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    """``sub.add_parser(name, ...)`` as a :class:`CommandParser`, with abbreviations of long
    flags refused (``--epoch 5`` is an error, not ``--epochs 5``)."""
    return sub.add_parser(name, allow_abbrev=False, **kwargs)


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """The flags of a training run (``pretrain``, ``demo``, ``bench``)."""
    p.add_argument("--method", choices=METHOD_NAMES, help="simsiam (default) or a "
                   "comparison method: its settings are model.METHOD.*, its views its authors' "
                   "recipe (augment.recipe auto), and the settings its authors used in other "
                   "sections (SwAV's crops; LARS, MoCo v2's lr, except on the cpu presets: "
                   "optim.method_optimizer) replace the preset's; --set still wins")
    p.add_argument("--data", help="a folder of images: flat (unlabelled: label-free signals "
                   "only) or one subfolder per class (labels feed the kNN monitor and probe "
                   "only, never training); with train/ and test/ (or val/) those are the "
                   "splits, else a seeded 10%% (data.holdout_fraction) is held out for the "
                   "monitor. Or cifar10 / cifar100 (torchvision's download), a caption table "
                   "(.csv/.tsv/.jsonl), or WebDataset shards ('shards/shard-{000000..000012}"
                   ".tar': a brace pattern, not a glob; simsiam shard writes them)")
    p.add_argument("--out", help="run directory (default from the config)")
    p.add_argument("--epochs", type=EPOCHS)
    p.add_argument("--batch-size", type=BATCH)
    p.add_argument("--per-class", type=PER_CLASS,
                   help="at most N training images per class (a "
                   "flat folder is one class; a preset's cap that leaves images out warns)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"))
    p.add_argument("--seed", type=SEED)
    p.add_argument("--resume", action="store_true", help="continue the run in --out "
                   "(on the data it started with: refused when they changed)")
    p.add_argument("--allow-changed-data", action="store_true",
                   help="with --resume: continue although images were added, removed or "
                   "changed since the run started (says what changed; held-out images stay "
                   "held out)")
    p.add_argument("--stop-on-collapse", action="store_true",
                   help="stop when the collapse guard fires (the last checkpoint is kept)")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--strict", action="store_true",
                   help="stop on the first image file that cannot be decoded (default: skip "
                   "such files with a warning naming each)")
    p.add_argument("--stop-after-epoch", type=POSITIVE_INT, metavar="N",
                   help="save and stop after epoch N of the schedule (continue with --resume)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars: one line "
                   "per epoch (loss, the monitor's figures, seconds) instead")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override any config key, e.g. --set optim.base_lr=0.4 (repeatable)")


def add_eval_flags(p: argparse.ArgumentParser) -> None:
    """The flags of ``knn``, ``linear`` and ``embed``: a backbone and labelled images."""
    p.add_argument("--checkpoint", required=True, help="a run directory (its "
                   "backbone.safetensors), RUN/backbone_init.safetensors (the random init), "
                   "RUN/checkpoints/last.pt, a torchvision or an official SimSiam checkpoint")
    p.add_argument("--data", required=True, help="image folder (with train/ and test/, or "
                   "split by the run's seed), cifar10 / cifar100, or labelled WebDataset "
                   "shards ('out/shard-{000000..000012}.tar', from simsiam shard)")
    p.add_argument("--per-class", type=PER_CLASS,
                   help="at most N training images per class")
    p.add_argument("--test-per-class", type=TEST_PER_CLASS,
                   help="at most N held-out images per class")
    p.add_argument("--seed", type=SEED,
                   help="seed of the held-out split for folders without test/ (default: "
                   "the run's seed)")
    add_input_flags(p)


def add_input_flags(p: argparse.ArgumentParser) -> None:
    """How images reach the backbone, and where: shared by every evaluation command."""
    p.add_argument("--image-size", type=IMAGE_SIZE,
                   help="input side in pixels (default: the run's; "
                   "for files without simsiam metadata 32 for a 3x3 stem, else 224)")
    p.add_argument("--normalize", choices=("auto", "cifar10", "imagenet"),
                   help="input normalisation (default: the run's, as for --image-size)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_clip_flags(p: argparse.ArgumentParser) -> None:
    """The flags of CLIP's ``retrieval`` and ``zeroshot``: a CLIP run and its inputs."""
    p.add_argument("--checkpoint", required=True, help="a CLIP run directory, its "
                   "backbone.safetensors / backbone_init.safetensors (the text tower "
                   "file beside it is read too) or its checkpoints/last.pt")
    p.add_argument("--image-size", type=IMAGE_SIZE,
                   help="input side (default: the run's)")
    p.add_argument("--normalize", choices=("auto", "cifar10", "imagenet"),
                   help="input normalisation (default: the run's)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_grid_flags(p: argparse.ArgumentParser, out: str, out_help: str) -> None:
    """The flags of ``reproduce`` and ``compare``: data, output and per-run overrides."""
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

"""Command line: ``simsiam pretrain|demo|bench|knn|linear|embed|report|reproduce|compare|...``.

Each subcommand is a thin call into the library. Settings come from a YAML preset
(``--config``) read by OmegaConf; the flags below override single fields.

The parser (:mod:`simsiam.cli.parser`, :mod:`simsiam.cli.eval_parsers`,
:mod:`simsiam.cli.flags`) imports no torch, so ``--help`` and a bad flag answer at once;
after parsing, the module of the chosen command is imported and run: :mod:`.train`
(pretrain, demo, bench), :mod:`.tools` (shard, report, describe), :mod:`.eval` (knn,
linear, embed), :mod:`.neighbors`, :mod:`.clip` (retrieval, zeroshot) and
:mod:`.reproduce` (reproduce, compare).
"""

from __future__ import annotations

import os
import sys
import warnings

from simsiam.cli.parser import build_parser
from simsiam.errors import (
    CollapseError,
    ConfigNotice,
    DataWarning,
    DiskFullError,
    SimSiamError,
)
from simsiam.fileio import display_path
from simsiam.launch import launched_as_main
from simsiam.train.interrupt import RunInterrupted

__all__ = ["build_parser", "main"]


def _show_warning(message, category, filename, lineno, file=None, line=None):
    if issubclass(category, ConfigNotice):  # once, from rank 0 under torchrun
        if launched_as_main():
            print(f"simsiam: note: {display_path(str(message))}", file=file or sys.stderr,
                  flush=True)
    elif issubclass(category, DataWarning):  # ours: the message says it all, no source line
        print(f"simsiam: warning: {display_path(str(message))}", file=file or sys.stderr,
              flush=True)
    else:
        _default_show_warning(message, category, filename, lineno, file, line)


_default_show_warning = warnings.showwarning


def main(argv: list[str] | None = None) -> int:
    """Run ``simsiam ARGV`` (default: ``sys.argv[1:]``) and return its exit code: 0 done,
    2 refused (bad flag, config, data or file: one line naming it), 3 the loss became
    NaN, 4 stopped on collapse, 5 the disk is full, 128 + N stopped by signal N (130:
    interrupted). A file name in a message that is not valid UTF-8 is shown with ``\\xNN``
    escapes (:func:`~simsiam.fileio.display_path`)."""
    args = build_parser().parse_args(argv)
    warnings.showwarning = _show_warning
    # Under torchrun every process reports; the others say which they are.
    who = "simsiam" if launched_as_main() else f"simsiam [rank {os.environ.get('RANK')}]"
    try:
        return args.func(args)
    except RunInterrupted as exc:
        print(f"{who} {args.command}: {display_path(str(exc))}", file=sys.stderr)
        return 128 + exc.signum
    except CollapseError as exc:
        print(f"{who} {args.command}: stopped: {display_path(str(exc))}", file=sys.stderr)
        return 4
    except DiskFullError as exc:
        print(f"{who} {args.command}: error: {display_path(str(exc))}", file=sys.stderr)
        return 5
    except SimSiamError as exc:
        print(f"{who} {args.command}: error: {display_path(str(exc))}", file=sys.stderr)
        return 2
    except FloatingPointError as exc:
        print(f"{who} {args.command}: error: {display_path(str(exc))}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"{who} {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

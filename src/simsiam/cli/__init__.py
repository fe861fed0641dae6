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

import atexit
import multiprocessing
import multiprocessing.util  # its exit hook first, so that ours runs before it
import os
import signal
import sys
import threading
import warnings

from simsiam.cli.parser import build_parser
from simsiam.errors import (
    CollapseError,
    ConfigNotice,
    DataWarning,
    DiskFullError,
    ResourceError,
    SimSiamError,
)
from simsiam.fileio import display_path
from simsiam.launch import launched_as_main
from simsiam.train.interrupt import RunInterrupted

__all__ = ["build_parser", "end_worker_processes", "main"]


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


def end_worker_processes() -> None:
    """End this process's daemonic children with SIGKILL and wait for them: the DataLoader
    workers a run left behind when it stopped on an error (e.g. one of them killed). Run
    at exit, before multiprocessing's own exit hook.

    That hook sends them SIGTERM and waits, but the workers ignore SIGTERM
    (:func:`simsiam.data.stream.worker_init`: a scheduler's SIGTERM is for the training
    process, which saves first), so its wait never ended: a run whose worker was killed
    hung after its error while the other workers lived. After a normal end there are
    none left (the loader stops them). torch's SIGCHLD handler, which would raise for
    the workers ended here, is set back to the default first.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    children = [child for child in multiprocessing.active_children() if child.daemon]
    for child in children:
        child.kill()
    for child in children:
        child.join(timeout=10)


def main(argv: list[str] | None = None) -> int:
    """Run ``simsiam ARGV`` (default: ``sys.argv[1:]``) and return its exit code: 0 done,
    2 refused (bad flag, config, data or file: one line naming it), 3 the loss became
    NaN, 4 stopped on collapse, 5 the disk is full, 6 out of resources (out of memory,
    a DataLoader worker killed: one line naming the settings to lower and the resume
    command), 128 + N stopped by signal N (130: interrupted). A file name in a message
    that is not valid UTF-8 is shown with ``\\xNN`` escapes
    (:func:`~simsiam.fileio.display_path`)."""
    args = build_parser().parse_args(argv)
    atexit.unregister(end_worker_processes)  # registered once, after multiprocessing's hook
    atexit.register(end_worker_processes)
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
    except ResourceError as exc:
        print(f"{who} {args.command}: out of resources: {display_path(str(exc))}",
              file=sys.stderr)
        return 6
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

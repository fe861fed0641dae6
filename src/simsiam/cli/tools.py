"""``simsiam shard``, ``report`` and ``describe``: one library call and its lines each."""

from __future__ import annotations

import argparse
from pathlib import Path

from simsiam.config import load_config
from simsiam.data.shard_writer import write_shards
from simsiam.fileio import check_writable
from simsiam.report import write_report
from simsiam.report.describe import describe_lines

__all__ = ["cmd_describe", "cmd_report", "cmd_shard"]


def cmd_shard(args: argparse.Namespace) -> int:
    """Write an image folder into WebDataset shards (labels and splits kept)."""
    check_writable(args.out, "--out", "choose another --out")
    res = write_shards(args.folder, args.out, args.shard_size, args.strict,
                       progress=not args.no_progress)
    counts = ", ".join(f"{n:,} {split}" for split, n in res.samples.items())
    print(f"shard: {sum(res.samples.values()):,} images ({counts}) in {len(res.shards)} "
          f"shards under '{args.out}'; train with --data '{res.pattern}'")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Plots and a summary of a run directory."""
    if Path(args.run).is_dir():  # a missing run is named by write_report
        check_writable(Path(args.run) / "report", "the report folder",
                       "copy the run directory somewhere writable and report it there")
    summary = write_report(args.run, embedding_points=args.points)
    print(f"report: {summary} (plots beside it)")
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    """Parameter counts per part of the model, and the input pipeline."""
    cfg = load_config(args.config, {"method": args.method} if args.method else {})
    for line in describe_lines(cfg):
        print(line)
    return 0

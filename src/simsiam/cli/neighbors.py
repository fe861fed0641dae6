"""``simsiam neighbors``: the most similar images of a folder, as a contact sheet or a file.

The search itself is :mod:`simsiam.eval.neighbors` (the index), the files
:mod:`simsiam.eval.neighbor_files` and the drawing :mod:`simsiam.report.sheets`; this
module checks the command line before anything loads and prints what was done.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from simsiam.cli.eval import resolve_checkpoint_flag
from simsiam.errors import ConfigError, DataError
from simsiam.eval.inputs import eval_processes, load_for_eval, neighbor_data
from simsiam.eval.neighbor_files import image_at, write_neighbors_file
from simsiam.eval.neighbors import build_index, index_cache_path, query_features
from simsiam.fileio import check_cache_writable, check_writable, display_path
from simsiam.launch import launched_as_main
from simsiam.report.sheets import contact_sheet

__all__ = ["check_neighbors_args", "cmd_neighbors"]


def check_neighbors_args(args: argparse.Namespace) -> Path:
    """Reject a bad command line before any model or image is loaded; returns --out.

    Raises:
        ConfigError: --query with --query-all, neither, no --out, the wrong extension, an
            existing --out without --overwrite.
        DataError: a --query file that does not exist.
    """
    if args.query and args.query_all:
        raise ConfigError("--query and --query-all do not go together: --query IMG [IMG ...] "
                          "draws a contact sheet of those images' neighbours, --query-all "
                          "writes every image's neighbours to a .json or .csv file")
    if not args.query and not args.query_all:
        raise ConfigError("nothing to search: pass --query IMG [IMG ...] (a contact sheet of "
                          "their neighbours in --data) or --query-all (every image's "
                          "neighbours to a .json or .csv file)")
    if args.out is None:
        raise ConfigError("--out is required: a .png file for the contact sheet of --query, "
                          "a .json or .csv file for --query-all")
    out = Path(args.out)
    allowed = (".json", ".csv") if args.query_all else (".png",)
    if out.suffix.lower() not in allowed:
        raise ConfigError(f"--out '{out}': {'--query-all' if args.query_all else '--query'} "
                          f"writes {' or '.join(allowed)}; name the file with that extension")
    if out.exists() and not args.overwrite:
        raise ConfigError(f"--out '{out}' already exists; pass --overwrite to replace it or "
                          "choose another --out")
    for q in args.query or []:
        if not Path(q).is_file():
            raise DataError(f"--query '{q}' does not exist (or is not a file); pass image "
                            "files that exist")
    check_writable(out.parent, "--out", f"write '{out.name}' into another folder")
    check_cache_writable()
    return out


def cmd_neighbors(args: argparse.Namespace) -> int:
    """Nearest neighbours by cosine similarity of backbone features: a contact sheet of
    --query images' neighbours, or every image's neighbours (--query-all) to a file."""
    resolve_checkpoint_flag(args)
    out = check_neighbors_args(args)
    with eval_processes(args.device) as ctx:
        backbone, info = load_for_eval(args)
        backbone = backbone.to(ctx.device)
        sets = ctx.main_first(lambda: neighbor_data(args.data, info, not args.no_progress))
        paths = [p for s in sets for p in s.paths]
        cache = None if args.no_cache else index_cache_path(
            args.checkpoint, [(s.paths, s.images.shape[1]) for s in sets],
            info["image_size"], info["normalize"])
        index = build_index(backbone, [s.images for s in sets], paths, info["image_size"],
                            info["normalize"], ctx.device,
                            cache if ctx.is_main else None, progress=not args.no_progress)
        if launched_as_main():
            _print_index(index, args.brute_force_max)
        if args.query_all:
            queries = index.features
            exclude: list[int | None] = list(range(len(index)))
        else:
            queries, query_images = query_features(
                backbone, args.query, sets[0].images.shape[1], info["image_size"],
                info["normalize"], ctx.device)
            where = {str(Path(p).resolve()): i for i, p in enumerate(paths)}
            exclude = [where.get(str(Path(q).resolve())) for q in args.query]
        if len(index) - any(e is not None for e in exclude) < 1:
            raise ConfigError(f"'{args.data}' holds {len(index)} image(s): no other image to "
                              "compare with; add images to the folder")
        sims, idx = index.search(queries, args.k, exclude, ctx.device, args.brute_force_max)
    if not launched_as_main():
        return 0
    if idx.shape[1] < args.k:
        print(f"neighbors: note: --k {args.k} reduced to {idx.shape[1]}: the folder has no "
              "more images to compare with", file=sys.stderr)
    if args.query_all:
        write_neighbors_file(out, args.checkpoint, args.data, index, sims, idx)
        print(f"neighbors: {len(index)} images x {idx.shape[1]} neighbours -> {out}")
        return 0
    _draw_sheet(args, out, sets, paths, index, query_images, sims, idx)
    return 0


def _print_index(index, brute_force_max: int) -> None:
    if index.reused:
        print(f"neighbors: index of {len(index)} images reused from {index.cache_path}")
    else:
        saved = f" -> {index.cache_path}" if index.cache_path else " (not cached)"
        print(f"neighbors: index of {len(index)} images built{saved}")
    if index.uses_faiss(brute_force_max):
        print(f"neighbors: searching with faiss IndexFlatIP ({len(index)} images > "
              f"--brute-force-max {brute_force_max})")


def _draw_sheet(args: argparse.Namespace, out: Path, sets: list, paths: list[str], index,
                query_images, sims, idx) -> None:
    offsets = np.cumsum([0] + [len(s) for s in sets])
    names = [[Path(paths[j]).name for j in row] for row in idx]
    for q, row_names, row_sims in zip(args.query, names, sims, strict=True):
        listed = ", ".join(f"{n} ({s:.3f})" for n, s in zip(row_names, row_sims, strict=True))
        print(f"neighbors: {display_path(q)} -> {display_path(listed)}")
    thumbs = np.stack([np.stack([image_at(sets, offsets, int(j)) for j in row])
                       for row in idx])
    contact_sheet(query_images, [Path(q).name for q in args.query], thumbs, names, sims, out,
                  title=f"{Path(args.checkpoint).name}: {idx.shape[1]} nearest of "
                        f"{len(index)} images in {args.data} (cosine similarity)")
    print(f"neighbors: sheet -> {out}")

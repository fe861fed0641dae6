"""``simsiam neighbors``: the most similar images of a folder, as a contact sheet or a file.

The search itself is :mod:`simsiam.eval.neighbors` (the index) and the drawing
:mod:`simsiam.report.sheets`; this module reads the command line, loads the checkpoint
and the folder (as :mod:`simsiam.eval.cli` does for the other evaluation commands) and
writes the results.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from simsiam import cliflags
from simsiam.config import load_config
from simsiam.distributed.context import launched_as_main
from simsiam.errors import ConfigError
from simsiam.eval.cli import _add_input_flags, _load_for_eval, _processes, _resolve_checkpoint
from simsiam.eval.neighbors import BRUTE_FORCE_MAX


def _check_neighbors_args(args: argparse.Namespace) -> Path:
    """Reject a bad command line before any model or image is loaded; returns --out."""
    from simsiam.errors import DataError

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
    return out


def _neighbor_data(args: argparse.Namespace, info: dict):
    """Every image of --data, train and held-out parts (no split): the ImageSets."""
    from simsiam.data.dataset import load_data

    cfg = load_config(None, {"data.source": args.data, "data.image_size": info["image_size"],
                             "data.holdout_fraction": 0.0})
    splits = load_data(cfg.data, info["seed"], progress=not args.no_progress)
    return [s for s in (splits.train, splits.test) if s is not None and len(s)]


def _write_neighbors_file(out: Path, args: argparse.Namespace, index, sims, idx) -> None:
    import csv
    import io
    import json

    from simsiam.train.checkpoint import atomic_write

    if out.suffix.lower() == ".json":
        record = {"checkpoint": str(args.checkpoint), "data": str(args.data),
                  "k": int(idx.shape[1]),
                  "neighbors": [{"path": index.paths[i], "neighbors": [
                      {"path": index.paths[j], "similarity": round(float(s), 6)}
                      for j, s in zip(idx[i], sims[i], strict=True)]}
                      for i in range(len(index))]}
        text = json.dumps(record, indent=1)
    else:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["path", "rank", "neighbor", "similarity"])
        for i in range(len(index)):
            for r, (j, s) in enumerate(zip(idx[i], sims[i], strict=True), start=1):
                w.writerow([index.paths[i], r, index.paths[j], f"{float(s):.6f}"])
        text = buf.getvalue()
    atomic_write(out, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _image_at(sets: list, offsets, i: int):
    """Row ``i`` of the index: the uint8 image ``(S, S, 3)`` of the set it falls in
    (``offsets``: the cumulative sizes of ``sets``, starting at 0)."""
    import numpy as np

    part = int(np.searchsorted(offsets, i, side="right")) - 1
    return np.asarray(sets[part].images[i - offsets[part]])


def cmd_neighbors(args: argparse.Namespace) -> int:
    """Nearest neighbours by cosine similarity of backbone features: a contact sheet of
    --query images' neighbours, or every image's neighbours (--query-all) to a file."""
    _resolve_checkpoint(args)
    import numpy as np

    from simsiam.eval.neighbors import build_index, index_cache_path, query_features
    from simsiam.report.sheets import contact_sheet

    out = _check_neighbors_args(args)
    with _processes(args) as ctx:
        backbone, info = _load_for_eval(args)
        backbone = backbone.to(ctx.device)
        sets = ctx.main_first(lambda: _neighbor_data(args, info))
        paths = [p for s in sets for p in s.paths]
        cache = None if args.no_cache else index_cache_path(
            args.checkpoint, [(s.paths, s.images.shape[1]) for s in sets],
            info["image_size"], info["normalize"])
        index = build_index(backbone, [s.images for s in sets], paths, info["image_size"],
                            info["normalize"], ctx.device,
                            cache if ctx.is_main else None, progress=not args.no_progress)
        if launched_as_main():
            if index.reused:
                print(f"neighbors: index of {len(index)} images reused from {index.cache_path}")
            else:
                saved = f" -> {index.cache_path}" if index.cache_path else " (not cached)"
                print(f"neighbors: index of {len(index)} images built{saved}")
            if index.uses_faiss(args.brute_force_max):
                print(f"neighbors: searching with faiss IndexFlatIP ({len(index)} images > "
                      f"--brute-force-max {args.brute_force_max})")
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
        _write_neighbors_file(out, args, index, sims, idx)
        print(f"neighbors: {len(index)} images x {idx.shape[1]} neighbours -> {out}")
        return 0
    offsets = np.cumsum([0] + [len(s) for s in sets])
    names = [[Path(paths[j]).name for j in row] for row in idx]
    for q, row_names, row_sims in zip(args.query, names, sims, strict=True):
        listed = ", ".join(f"{n} ({s:.3f})" for n, s in zip(row_names, row_sims, strict=True))
        print(f"neighbors: {q} -> {listed}")
    thumbs = np.stack([np.stack([_image_at(sets, offsets, int(j)) for j in row])
                       for row in idx])
    contact_sheet(query_images, [Path(q).name for q in args.query], thumbs, names, sims, out,
                  title=f"{Path(args.checkpoint).name}: {idx.shape[1]} nearest of "
                        f"{len(index)} images in {args.data} (cosine similarity)")
    print(f"neighbors: sheet -> {out}")
    return 0




def add_neighbors_parser(sub) -> None:
    """Register ``neighbors`` on the ``simsiam`` subparsers."""
    p = sub.add_parser("neighbors", help="most similar images of a folder (cosine similarity "
                       "of backbone features): a contact sheet, or all pairs to .json/.csv",
                       description="For each --query image file, its --k most similar images "
                       "of --data by cosine similarity of the backbone's l2-normalised pool5 "
                       "features (exact search), drawn as a contact sheet PNG; or, with "
                       "--query-all, every image's --k nearest other images written to a "
                       ".json or .csv file. A query file that is itself in --data is left "
                       "out of its own neighbours only when it is the same file (same "
                       "resolved path); a copy elsewhere is found with similarity 1.000. The "
                       "folder's features are built once and kept in CACHE/neighbors/ (CACHE: "
                       "$SIMSIAM_CACHE_DIR, else ~/.cache/simsiam), reused while the "
                       "checkpoint and the images are unchanged (--no-cache: neither).")
    p.add_argument("--checkpoint", required=True, help="a run directory (its "
                   "backbone.safetensors), RUN/backbone_init.safetensors (untrained, for "
                   "comparison), "
                   "RUN/checkpoints/last.pt, or a torchvision / official SimSiam checkpoint")
    p.add_argument("--data", required=True, help="image folder to search: every image of it "
                   "(with train/ and test/ subfolders: both), or cifar10 / cifar100")
    p.add_argument("--query", nargs="+", metavar="IMG", help="image files to find neighbours "
                   "of (inside --data or not); a file that is in --data is excluded from its "
                   "own neighbours only when it is the same path (resolved), so a duplicate "
                   "under another name is found")
    p.add_argument("--query-all", action="store_true", help="every image's --k nearest other "
                   "images (itself excluded) to --out FILE.json or FILE.csv")
    p.add_argument("--k", type=cliflags.POSITIVE_INT, default=8,
                   help="neighbours per query (default 8)")
    p.add_argument("--out", help="(required) --query: the contact sheet .png; --query-all: .json "
                   "({checkpoint, data, k, neighbors: [{path, neighbors: [{path, "
                   "similarity}]}]}) or .csv (path,rank,neighbor,similarity)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--no-cache", action="store_true", help="neither reuse nor save the "
                   "folder's index of features")
    p.add_argument("--brute-force-max", type=cliflags.COUNT, default=BRUTE_FORCE_MAX, metavar="N",
                   help="above N images search with faiss's exact IndexFlatIP when faiss is "
                   "installed (same results); otherwise always brute force (default "
                   f"{BRUTE_FORCE_MAX}: brute force measured 2.7 s per 100 queries at 1M "
                   "images on 2 CPU cores)")
    _add_input_flags(p)
    p.set_defaults(func=cmd_neighbors)

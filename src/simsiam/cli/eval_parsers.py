"""The parsers of the evaluation subcommands: ``knn``, ``linear``, ``embed``,
``neighbors`` and CLIP's ``retrieval`` and ``zeroshot`` (torch-free, as
:mod:`simsiam.cli.parser`)."""

from __future__ import annotations

from simsiam.choices import BRUTE_FORCE_MAX, TEMPLATE_SETS
from simsiam.cli import flags
from simsiam.cli.flags import Handler, add_clip_flags, add_eval_flags, add_input_flags, subparser

__all__ = ["add_eval_parsers"]

# the modules that run the subcommands, imported after parsing
EVAL, NEIGHBORS, CAPTIONS = "simsiam.cli.eval", "simsiam.cli.neighbors", "simsiam.cli.clip"

NEIGHBORS_DESCRIPTION = (
    "For each --query image file, its --k most similar images of --data by cosine similarity "
    "of the backbone's l2-normalised pool5 features (exact search), drawn as a contact sheet "
    "PNG; or, with --query-all, every image's --k nearest other images written to a .json or "
    ".csv file. A query file that is itself in --data is left out of its own neighbours only "
    "when it is the same file (same resolved path); a copy elsewhere is found with similarity "
    "1.000. The folder's features are built once and kept in CACHE/neighbors/ (CACHE: "
    "$SIMSIAM_CACHE_DIR, else ~/.cache/simsiam), reused while the checkpoint and the images "
    "are unchanged (--no-cache: neither).")


def add_eval_parsers(sub) -> None:
    """Register ``knn``, ``linear``, ``embed``, ``neighbors``, ``retrieval`` and
    ``zeroshot`` on the ``simsiam`` subparsers."""
    p = subparser(sub, "knn", help="kNN top-1 of a checkpoint or exported backbone")
    add_eval_flags(p)
    p.add_argument("--k", type=flags.KNN_K, default=200,
                   help="neighbours (default 200; capped at the number of training images)")
    p.add_argument("--t", type=flags.KNN_T, default=0.1, help="temperature T")
    p.set_defaults(func=Handler(EVAL, "cmd_knn"))
    p = subparser(sub, "linear", help="linear probe on a frozen backbone")
    add_eval_flags(p)
    p.add_argument("--protocol", choices=("fast", "paper", "cifar"), default="fast",
                   help="fast: cached features, BN + Linear (default); paper: SGD momentum "
                   "0.9 in LARC (trust 0.001, no clip, bias included), base lr 0.1, batch "
                   "4096, 90 epochs, wd 0; cifar: SGD momentum 0.9, lr 30, batch 256, 100 "
                   "epochs, wd 0 (both on augmented images through the frozen backbone, "
                   "per-epoch cosine lr, as main_lincls.py). Every protocol evaluates after "
                   "each epoch: top1/top5 are the last epoch's, best_top1 the best epoch's")
    p.add_argument("--epochs", type=flags.POSITIVE_INT,
                   help="default: the protocol's (fast: 100)")
    p.add_argument("--batch-size", type=flags.LINEAR_BATCH,
                   help="default: the protocol's (fast: 256)")
    p.add_argument("--lr", type=flags.POSITIVE_FLOAT,
                   help="fast protocol only: base lr x batch/256 (default 0.1)")
    p.add_argument("--out", help="result folder (default: RUN/linear)")
    p.add_argument("--overwrite", action="store_true", help="replace a result in --out")
    p.set_defaults(func=Handler(EVAL, "cmd_linear"))
    p = subparser(sub, "embed", help="backbone features of every image to .npz or .csv")
    add_eval_flags(p)
    p.add_argument("--out", required=True, help="output file: .npz (numpy) or .csv (pandas)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=Handler(EVAL, "cmd_embed"))
    _add_neighbors_parser(sub)
    _add_clip_parsers(sub)


def _add_neighbors_parser(sub) -> None:
    p = subparser(sub, "neighbors", help="most similar images of a folder (cosine similarity "
                  "of backbone features): a contact sheet, or all pairs to .json/.csv",
                  description=NEIGHBORS_DESCRIPTION)
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
    p.add_argument("--k", type=flags.POSITIVE_INT, default=8,
                   help="neighbours per query (default 8)")
    p.add_argument("--out", help="(required) --query: the contact sheet .png; --query-all: .json "
                   "({checkpoint, data, k, neighbors: [{path, neighbors: [{path, "
                   "similarity}]}]}) or .csv (path,rank,neighbor,similarity)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--no-cache", action="store_true", help="neither reuse nor save the "
                   "folder's index of features")
    p.add_argument("--brute-force-max", type=flags.COUNT, default=BRUTE_FORCE_MAX, metavar="N",
                   help="above N images search with faiss's exact IndexFlatIP when faiss is "
                   "installed (same results); otherwise always brute force (default "
                   f"{BRUTE_FORCE_MAX}: brute force measured 2.7 s per 100 queries at 1M "
                   "images on 2 CPU cores)")
    add_input_flags(p)
    p.set_defaults(func=Handler(NEIGHBORS, "cmd_neighbors"))


def _add_clip_parsers(sub) -> None:
    p = subparser(sub, "retrieval", help="CLIP: image-text recall@1/5/10 on held-out images")
    add_clip_flags(p)
    p.add_argument("--data", help="caption table (CSV/TSV/JSONL) or WebDataset shards "
                   "(default: the run's data)")
    p.add_argument("--image-root", help="folder the table's image paths are relative to")
    p.add_argument("--split", choices=("test", "all"), default="test", help="test: the "
                   "held-out images, split by image with the run's seed (default); all: every "
                   "image of --data")
    p.add_argument("--holdout-fraction", type=flags.HOLDOUT, help="default: the run's")
    p.add_argument("--seed", type=flags.SEED, help="seed of the split (default: the run's)")
    p.set_defaults(func=Handler(CAPTIONS, "cmd_retrieval"))
    p = subparser(sub, "zeroshot", help="CLIP: zero-shot top-1/top-5 on a class folder")
    add_clip_flags(p)
    p.add_argument("--data", required=True, help="class-folder dataset (its test/ or val/ "
                   "split when present)")
    p.add_argument("--split", choices=("test", "all"), default="test",
                   help="test: the folder's test/ (or val/) split when it has one (default)")
    p.add_argument("--classnames", help="names for the prompts, one per class folder in sorted "
                   "order: comma-separated or a text file (default: folder names, '_' -> ' ')")
    p.add_argument("--templates", default="auto", help=f"prompt templates: {TEMPLATE_SETS} "
                   "(openai: the CLIP paper's 80 ImageNet prompts; cifar: its 18 CIFAR ones; "
                   "auto: cifar for CIFAR-10's class names, else openai) or a file with one "
                   "template per line ({} = the class name)")
    p.add_argument("--per-class", type=flags.PER_CLASS, help="at most N images per class")
    p.set_defaults(func=Handler(CAPTIONS, "cmd_zeroshot"))

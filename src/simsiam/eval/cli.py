"""The evaluation subcommands: ``simsiam knn``, ``linear``, ``embed`` and ``neighbors``.

Each loads a checkpoint or exported backbone, the images (the run's held-out split), and
runs one protocol of :mod:`simsiam.eval`. Under ``torchrun`` every process extracts its
shard of the features (:mod:`simsiam.distributed`); rank 0 prints and writes.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

from simsiam import cliflags
from simsiam.config import load_config
from simsiam.distributed.context import launched_as_main, world_size
from simsiam.errors import ConfigError, SimSiamError


@contextmanager
def _processes(args: argparse.Namespace):
    """The evaluation commands' process group: under torchrun every process extracts the
    features of its shard of the images (see :mod:`simsiam.distributed`)."""
    from simsiam.distributed import setup_distributed

    ctx = setup_distributed(args.device)
    try:
        yield ctx
    finally:
        ctx.close()


def cmd_knn(args: argparse.Namespace) -> int:
    _resolve_checkpoint(args)
    from simsiam.eval.knn import knn_evaluate

    with _processes(args) as ctx:
        backbone, info = _load_for_eval(args)
        train, test = ctx.main_first(lambda: _eval_data(args, info))
        device = ctx.device
        acc = knn_evaluate(backbone.to(device), train.images, train.labels, test.images,
                           test.labels, len(train.classes), info["image_size"],
                           info["normalize"], device, args.k, args.t)
    if launched_as_main():
        print(f"knn: top1={acc:.2f}% k={min(args.k, len(train))} T={args.t} "
              f"bank={len(train)} queries={len(test)}")
    return 0


def _resolve_checkpoint(args: argparse.Namespace) -> None:
    """--checkpoint may name a run directory: its backbone.safetensors (else last.pt)."""
    from simsiam.eval.loading import resolve_run_checkpoint

    args.checkpoint = str(resolve_run_checkpoint(Path(args.checkpoint)))


def _load_for_eval(args: argparse.Namespace):
    """The backbone and its input settings; --image-size/--normalize win over the file's."""
    from simsiam.eval.loading import load_backbone_for_eval

    backbone, info = load_backbone_for_eval(args.checkpoint)
    if args.image_size is not None:
        info["image_size"] = args.image_size
    if args.normalize is not None:
        info["normalize"] = args.normalize
    return backbone, info


# settings of a run's data section that make its held-out split and read its files
_RUN_SPLIT_KEYS = ("holdout_fraction", "image_root", "image_column", "caption_column")


def _eval_data(args: argparse.Namespace, info: dict, need_test: bool = True,
               need_labels: bool = True):
    from simsiam.data.dataset import CapWarning, load_splits

    over = {"data.source": args.data, "data.image_size": info["image_size"],
            "data.per_class": args.per_class, "data.test_per_class": args.test_per_class}
    run = info.get("data") or {}
    if run.get("source") and Path(run["source"]) == Path(args.data):  # the run's own data:
        over |= {f"data.{k}": run[k] for k in _RUN_SPLIT_KEYS if k in run}  # its split
    cfg = load_config(None, over)
    # Same held-out split as pretraining (folders without test/ split by the run's seed).
    seed = args.seed if args.seed is not None else info["seed"]
    with warnings.catch_warnings():
        # --per-class is the user's own cap here: no advice on how to lift it
        warnings.simplefilter("ignore", CapWarning)
        train, test = load_splits(cfg.data, seed, progress=not args.no_progress)
    if test is None and need_test:
        raise SimSiamError(f"'{args.data}' has no held-out images to evaluate on")
    if need_labels and not train.labelled:
        raise SimSiamError(f"'{args.data}' has no labels (one class: a folder without class "
                           f"subfolders), so an accuracy would mean nothing; look at what the "
                           "encoder learned with `simsiam neighbors`, or at the label-free "
                           "figures of the run's metrics.jsonl / report")
    return train, test


def cmd_linear(args: argparse.Namespace) -> int:
    """Linear probe on a frozen backbone; writes classifier and JSON.

    Prints ``linear top1=.. top5=..`` (the last epoch's classifier, the one saved) and, when
    the probe evaluated every epoch, ``linear: best epoch E of N: top1=..``; ``linear.json``
    holds ``top1`` / ``top5`` (last epoch), ``best_top1`` / ``best_epoch`` (1-based) and
    ``epoch_top1`` (top-1 after each epoch)."""
    _resolve_checkpoint(args)
    import json

    from safetensors.torch import save_file

    from simsiam.train.checkpoint import atomic_write

    ckpt = Path(args.checkpoint)
    out = Path(args.out) if args.out else (
        ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent) / "linear"
    if (out / "linear.json").exists() and not args.overwrite:
        raise ConfigError(f"'{out}' already holds a linear-probe result; pass --overwrite "
                          "or another --out")
    with _processes(args) as ctx:
        backbone, info = _load_for_eval(args)
        train, test = ctx.main_first(lambda: _eval_data(args, info))
        res, clf, batch, base_lr, optimizer = _run_probe(args, backbone, info, train, test,
                                                         ctx.device)
    if not launched_as_main():
        return 0
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in clf.state_dict().items()}
    atomic_write(out / "classifier.safetensors",
                 lambda tmp: save_file(state, str(tmp), metadata={"classes": json.dumps(
                     train.classes)}))
    record = {"protocol": args.protocol, "checkpoint": str(ckpt), "data": args.data,
              "top1": res.top1, "top5": res.top5, "top1_top5_of": "last epoch",
              "best_top1": res.best_top1, "best_epoch": res.best_epoch,
              "epoch_top1": res.epoch_top1, "train_images": res.train_images,
              "test_images": res.test_images, "epochs": res.epochs,
              "batch_size": batch, "optimizer": optimizer, "base_lr": base_lr,
              "lr": base_lr * batch / 256, "arch": info["arch"],
              "stem": info["stem"]}
    text = json.dumps(record, indent=2)
    atomic_write(out / "linear.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    print(f"linear top1={res.top1:.2f} top5={res.top5:.2f}")
    if res.best_epoch is not None:
        print(f"linear: best epoch {res.best_epoch} of {res.epochs}: "
              f"top1={res.best_top1:.2f} (the line above is the last epoch's)")
    return 0


def _run_probe(args: argparse.Namespace, backbone, info: dict, train, test, device):
    """The probe ``args.protocol`` asks for: (result, classifier, batch, base lr, optimizer).

    Under torchrun the features are extracted shard by shard and gathered; every process
    then fits the same classifier on them (rank 0 writes it)."""
    from simsiam.eval.linear import PROTOCOLS, augmented_probe, linear_probe

    data = (backbone.to(device), train.images, train.labels, test.images, test.labels,
            len(train.classes), info["image_size"], info["normalize"])
    if args.protocol == "fast":
        batch = min(args.batch_size or 256, len(train))
        base_lr = 0.1 if args.lr is None else args.lr
        res, clf = linear_probe(*data, device, args.epochs or 100, batch, base_lr)
        return res, clf, batch, base_lr, "sgd"
    if args.lr is not None:
        raise ConfigError(f"--lr is for the fast protocol; --protocol {args.protocol} uses "
                          "the paper's lr")
    if world_size() > 1 and launched_as_main():
        print(f"linear: note: --protocol {args.protocol} is not sharded: every process runs "
              "the whole probe; run it as one process", file=sys.stderr, flush=True)
    spec = PROTOCOLS[args.protocol]
    batch = min(args.batch_size or spec["batch_size"], len(train))
    res, clf = augmented_probe(*data, args.protocol, device, args.epochs, batch)
    return res, clf, batch, spec["base_lr"], spec["optimizer"]


def cmd_embed(args: argparse.Namespace) -> int:
    """Backbone features of every image (train and held-out) to .npz or .csv."""
    _resolve_checkpoint(args)
    from simsiam.eval.embed import export_embeddings

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise ConfigError(f"'{out}' already exists; pass --overwrite or another --out")
    with _processes(args) as ctx:
        backbone, info = _load_for_eval(args)
        train, test = ctx.main_first(lambda: _eval_data(args, info, need_test=False,
                                                         need_labels=False))
        sets = {"train": train} | ({"test": test} if test is not None else {})
        n, dim = export_embeddings(backbone.to(ctx.device), sets, out, info["image_size"],
                                   info["normalize"], ctx.device)
    if launched_as_main():
        print(f"embed: {n} images x {dim} features -> {out}")
    return 0


def _add_eval_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="a run directory (its "
                   "backbone.safetensors), RUN/backbone_init.safetensors (the random init), "
                   "RUN/checkpoints/last.pt, a torchvision or an official SimSiam checkpoint")
    p.add_argument("--data", required=True, help="image folder (with train/ and test/, or "
                   "split by the run's seed), cifar10 / cifar100, or labelled WebDataset "
                   "shards ('out/shard-{000000..000012}.tar', from simsiam shard)")
    p.add_argument("--per-class", type=cliflags.PER_CLASS,
                   help="at most N training images per class")
    p.add_argument("--test-per-class", type=cliflags.TEST_PER_CLASS,
                   help="at most N held-out images per class")
    p.add_argument("--seed", type=cliflags.SEED,
                   help="seed of the held-out split for folders without test/ (default: "
                   "the run's seed)")
    _add_input_flags(p)


def _add_input_flags(p: argparse.ArgumentParser) -> None:
    """How images reach the backbone, and where: shared by every evaluation command."""
    p.add_argument("--image-size", type=cliflags.IMAGE_SIZE,
                   help="input side in pixels (default: the run's; "
                   "for files without simsiam metadata 32 for a 3x3 stem, else 224)")
    p.add_argument("--normalize", choices=("auto", "cifar10", "imagenet"),
                   help="input normalisation (default: the run's, as for --image-size)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_eval_parsers(sub) -> None:
    """Register ``knn``, ``linear``, ``embed`` and ``neighbors`` on the ``simsiam``
    subparsers."""
    p = sub.add_parser("knn", help="kNN top-1 of a checkpoint or exported backbone")
    _add_eval_flags(p)
    p.add_argument("--k", type=cliflags.KNN_K, default=200,
                   help="neighbours (default 200; capped at the number of training images)")
    p.add_argument("--t", type=cliflags.KNN_T, default=0.1, help="temperature T")
    p.set_defaults(func=cmd_knn)
    p = sub.add_parser("linear", help="linear probe on a frozen backbone")
    _add_eval_flags(p)
    p.add_argument("--protocol", choices=("fast", "paper", "cifar"), default="fast",
                   help="fast: cached features, BN + Linear (default); paper: SGD momentum "
                   "0.9 in LARC (trust 0.001, no clip, bias included), base lr 0.1, batch "
                   "4096, 90 epochs, wd 0; cifar: SGD momentum 0.9, lr 30, batch 256, 100 "
                   "epochs, wd 0 (both on augmented images through the frozen backbone, "
                   "per-epoch cosine lr, as main_lincls.py). Every protocol evaluates after "
                   "each epoch: top1/top5 are the last epoch's, best_top1 the best epoch's")
    p.add_argument("--epochs", type=cliflags.POSITIVE_INT,
                   help="default: the protocol's (fast: 100)")
    p.add_argument("--batch-size", type=cliflags.LINEAR_BATCH,
                   help="default: the protocol's (fast: 256)")
    p.add_argument("--lr", type=cliflags.POSITIVE_FLOAT,
                   help="fast protocol only: base lr x batch/256 (default 0.1)")
    p.add_argument("--out", help="result folder (default: RUN/linear)")
    p.add_argument("--overwrite", action="store_true", help="replace a result in --out")
    p.set_defaults(func=cmd_linear)
    p = sub.add_parser("embed", help="backbone features of every image to .npz or .csv")
    _add_eval_flags(p)
    p.add_argument("--out", required=True, help="output file: .npz (numpy) or .csv (pandas)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=cmd_embed)
    from simsiam.eval.clip_cli import add_clip_parsers
    from simsiam.eval.neighbors_cli import add_neighbors_parser

    add_neighbors_parser(sub)
    add_clip_parsers(sub)

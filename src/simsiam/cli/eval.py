"""``simsiam knn``, ``linear`` and ``embed``: a checkpoint or exported backbone, the
images (the run's held-out split), one protocol of :mod:`simsiam.eval`. Under torchrun
every process extracts its shard of the features (:mod:`simsiam.distributed`); rank 0
prints and writes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from simsiam.distributed import world_size
from simsiam.errors import ConfigError
from simsiam.eval.embed import export_embeddings
from simsiam.eval.inputs import eval_data, eval_processes, load_for_eval
from simsiam.eval.knn import knn_evaluate
from simsiam.eval.linear_run import (
    check_probe_options,
    default_linear_out,
    run_probe,
    write_linear_result,
)
from simsiam.eval.loading import resolve_run_checkpoint
from simsiam.fileio import check_cache_writable, check_writable
from simsiam.launch import launched_as_main

__all__ = ["cmd_embed", "cmd_knn", "cmd_linear", "resolve_checkpoint_flag"]


def resolve_checkpoint_flag(args: argparse.Namespace) -> None:
    """--checkpoint may name a run directory: its backbone.safetensors (else last.pt)."""
    args.checkpoint = str(resolve_run_checkpoint(Path(args.checkpoint)))


def cmd_knn(args: argparse.Namespace) -> int:
    """kNN top-1 of a backbone on the held-out images."""
    resolve_checkpoint_flag(args)
    with eval_processes(args.device) as ctx:
        backbone, info = load_for_eval(args)
        train, test = ctx.main_first(lambda: eval_data(args, info))
        device = ctx.device
        acc = knn_evaluate(backbone.to(device), train.images, train.labels, test.images,
                           test.labels, len(train.classes), info["image_size"],
                           info["normalize"], device, args.k, args.t)
    if launched_as_main():
        print(f"knn: top1={acc:.2f}% k={min(args.k, len(train))} T={args.t} "
              f"bank={len(train)} queries={len(test)}")
    return 0


def cmd_linear(args: argparse.Namespace) -> int:
    """Linear probe on a frozen backbone; writes classifier and JSON.

    Prints ``linear top1=.. top5=..`` (the last epoch's classifier, the one saved) and, when
    the probe evaluated every epoch, ``linear: best epoch E of N: top1=..``; ``linear.json``
    holds ``top1`` / ``top5`` (last epoch), ``best_top1`` / ``best_epoch`` (1-based) and
    ``epoch_top1`` (top-1 after each epoch)."""
    resolve_checkpoint_flag(args)
    ckpt = Path(args.checkpoint)
    out = Path(args.out) if args.out else default_linear_out(ckpt)
    if (out / "linear.json").exists() and not args.overwrite:
        raise ConfigError(f"'{out}' already holds a linear-probe result; pass --overwrite "
                          "or another --out")
    check_writable(out, "--out", "choose another --out")
    check_cache_writable()
    check_probe_options(args.protocol, args.lr)
    with eval_processes(args.device) as ctx:
        backbone, info = load_for_eval(args)
        train, test = ctx.main_first(lambda: eval_data(args, info))
        if args.protocol != "fast" and world_size() > 1 and launched_as_main():
            print(f"linear: note: --protocol {args.protocol} is not sharded: every process "
                  "runs the whole probe; run it as one process", file=sys.stderr, flush=True)
        res, clf, batch, base_lr, optimizer = run_probe(
            args.protocol, backbone, info, train, test, ctx.device, args.epochs,
            args.batch_size, args.lr)
    if not launched_as_main():
        return 0
    record = {"protocol": args.protocol, "checkpoint": str(ckpt), "data": args.data,
              "top1": res.top1, "top5": res.top5, "top1_top5_of": "last epoch",
              "best_top1": res.best_top1, "best_epoch": res.best_epoch,
              "epoch_top1": res.epoch_top1, "train_images": res.train_images,
              "test_images": res.test_images, "epochs": res.epochs,
              "batch_size": batch, "optimizer": optimizer, "base_lr": base_lr,
              "lr": base_lr * batch / 256, "arch": info["arch"],
              "stem": info["stem"]}
    write_linear_result(out, clf, train.classes, record)
    print(f"linear top1={res.top1:.2f} top5={res.top5:.2f}")
    if res.best_epoch is not None:
        print(f"linear: best epoch {res.best_epoch} of {res.epochs}: "
              f"top1={res.best_top1:.2f} (the line above is the last epoch's)")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    """Backbone features of every image (train and held-out) to .npz or .csv."""
    resolve_checkpoint_flag(args)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise ConfigError(f"'{out}' already exists; pass --overwrite or another --out")
    check_writable(out.parent, "--out", f"write '{out.name}' into another folder")
    check_cache_writable()
    with eval_processes(args.device) as ctx:
        backbone, info = load_for_eval(args)
        train, test = ctx.main_first(lambda: eval_data(args, info, need_test=False,
                                                        need_labels=False))
        sets = {"train": train} | ({"test": test} if test is not None else {})
        n, dim = export_embeddings(backbone.to(ctx.device), sets, out, info["image_size"],
                                   info["normalize"], ctx.device)
    if launched_as_main():
        print(f"embed: {n} images x {dim} features -> {out}")
    return 0

"""CLIP's evaluation commands: ``simsiam retrieval`` and ``simsiam zeroshot``.

Both load a CLIP run's image and text towers
(:func:`~simsiam.eval.clip_inputs.load_clip_for_eval`) and print one line:
``retrieval i2t R@1=.. R@5=.. R@10=.. t2i R@1=.. R@5=.. R@10=..`` on the held-out images of
a caption table (split by image with the run's seed, as in training), and ``zeroshot
top1=.. top5=..`` on a class-folder dataset (class names from the folder names, prompts
from the CLIP paper). The image tower alone is an ordinary exported backbone, so ``knn``,
``linear``, ``embed`` and ``neighbors`` take it as they take any other.
"""

from __future__ import annotations

import argparse
from typing import Any

from simsiam.distributed.context import resolve_device
from simsiam.eval.clip_inputs import (
    caption_source,
    class_names,
    given_class_names,
    load_clip_for_eval,
    retrieval_images,
    zeroshot_images,
)
from simsiam.eval.inputs import check_image_size
from simsiam.eval.retrieval import retrieval_line, retrieval_record
from simsiam.eval.zeroshot import templates, zeroshot_accuracy

__all__ = ["cmd_retrieval", "cmd_zeroshot"]


def _inputs(args: argparse.Namespace, info: dict[str, Any]) -> tuple[int, str]:
    if args.image_size is not None:  # one the image tower cannot run at: refused now
        check_image_size(info["arch"], args.image_size)
    size = args.image_size if args.image_size is not None else info["image_size"]
    norm = args.normalize if args.normalize is not None else info["normalize"]
    return size, norm


def cmd_retrieval(args: argparse.Namespace) -> int:
    """Recall@1/5/10 both ways on the held-out images of a caption table."""
    model, _, info = load_clip_for_eval(args.checkpoint)
    size, norm = _inputs(args, info)
    source = caption_source(args.data or info["source"], given=args.data is not None)
    chosen = retrieval_images(source, info, size, args.holdout_fraction, args.image_root,
                              args.split, args.seed, progress=not args.no_progress)
    device = resolve_device(args.device)
    record = retrieval_record(model.to(device), chosen.images, chosen.captions, size, norm,
                              device)
    print(retrieval_line(record))
    which = "held-out" if args.split == "test" else "(all)"
    print(f"retrieval: {record['retrieval_images']} {which} images, "
          f"{record['retrieval_captions']} captions of '{source}' (model {info['where']})")
    return 0


def cmd_zeroshot(args: argparse.Namespace) -> int:
    """Zero-shot top-1/top-5 on a class-folder dataset with prompt ensembling."""
    given = given_class_names(args.classnames)  # text files read (or refused) before any work
    fixed = None if args.templates == "auto" else templates(args.templates, given or [])
    model, _, info = load_clip_for_eval(args.checkpoint)
    size, norm = _inputs(args, info)
    images, source = zeroshot_images(args.data, info, size, args.split, args.per_class,
                                     progress=not args.no_progress)
    names = class_names(given, images.classes)
    prompt_templates = fixed if fixed is not None else templates("auto", names)
    chosen = args.templates
    if chosen == "auto":
        chosen = "auto: " + ("cifar, the CIFAR-10 class names" if len(prompt_templates) == 18
                             else "openai, names other than CIFAR-10's")
    device = resolve_device(args.device)
    res = zeroshot_accuracy(model.to(device), images.images, images.labels, names,
                            prompt_templates, size, norm, device)
    print(f"zeroshot top1={res['top1']:.2f}% top5={res['top5']:.2f}%")
    cap = f" (--per-class {args.per_class})" if args.per_class else ""
    print(f"zeroshot: {res['images']} images of '{source}'{cap}, {res['classes']} "
          f"classes, {res['templates']} prompt templates ({chosen}); model "
          f"{info['where']}")
    return 0

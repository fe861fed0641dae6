"""What the evaluation commands (``knn``, ``linear``, ``embed``, ``neighbors``) read: a
backbone with its input settings, and the images, split as the run split them.

The options are read from any object with the named attributes (an
``argparse.Namespace`` of the command line, or a ``types.SimpleNamespace``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from simsiam.config import load_config
from simsiam.data import CapWarning, ImageSet, load_data, load_splits
from simsiam.distributed import DistContext, setup_distributed
from simsiam.errors import ConfigError, SimSiamError
from simsiam.eval.loading import load_backbone_for_eval
from simsiam.models.backbones import is_timm, timm_input_problem, timm_name

__all__ = ["RUN_SPLIT_KEYS", "BackboneOptions", "DataOptions", "check_image_size", "eval_data",
           "eval_processes", "load_for_eval", "neighbor_data"]

# settings of a run's data section that make its held-out split and read its files
RUN_SPLIT_KEYS = ("holdout_fraction", "image_root", "image_column", "caption_column")


class BackboneOptions(Protocol):
    """Which backbone and how images reach it: ``checkpoint`` (a file), ``image_size``
    (pixels, None: the file's) and ``normalize`` (None: the file's)."""

    checkpoint: str
    image_size: int | None
    normalize: str | None


class DataOptions(Protocol):
    """Which images: ``data`` (folder, dataset name or shards), ``per_class`` and
    ``test_per_class`` (caps, None: all), ``seed`` (of the held-out split, None: the
    run's) and ``no_progress``."""

    data: str
    per_class: int | None
    test_per_class: int | None
    seed: int | None
    no_progress: bool


@contextmanager
def eval_processes(device: str) -> Iterator[DistContext]:
    """The evaluation commands' process group: under torchrun every process extracts the
    features of its shard of the images (see :mod:`simsiam.distributed`)."""
    ctx = setup_distributed(device)
    try:
        yield ctx
    finally:
        ctx.close()


def check_image_size(arch: str, image_size: int) -> None:
    """Refuse ``--image-size`` that backbone ``arch`` cannot run at (a ``timm/<name>`` made
    for one input size, :func:`~simsiam.models.backbones.timm_input_problem`), before any
    image is read.

    Raises:
        ConfigError: naming both sizes and the fix.
    """
    problem = timm_input_problem(timm_name(arch), image_size) if is_timm(arch) else None
    if problem is not None:
        own, error = problem
        raise ConfigError(f"--image-size {image_size}: {arch} is made for {own} x {own} px "
                          f"inputs and cannot run at {image_size} x {image_size} ({error}); "
                          f"pass --image-size {own}")


def load_for_eval(opts: BackboneOptions) -> tuple[nn.Module, dict[str, Any]]:
    """The backbone of ``opts.checkpoint`` and its input settings
    (:func:`~simsiam.eval.loading.load_backbone_for_eval`); ``opts.image_size`` and
    ``opts.normalize``, when given, win over the file's.

    Raises:
        CheckpointError: as :func:`~simsiam.eval.loading.load_backbone_for_eval`.
        ConfigError: a timm backbone cannot run at ``opts.image_size``
            (:func:`check_image_size`).
    """
    backbone, info = load_backbone_for_eval(opts.checkpoint)
    if opts.image_size is not None:
        check_image_size(info.get("arch", ""), opts.image_size)
        info["image_size"] = opts.image_size
    if opts.normalize is not None:
        info["normalize"] = opts.normalize
    return backbone, info


def eval_data(opts: DataOptions, info: dict[str, Any], need_test: bool = True,
              need_labels: bool = True) -> tuple[ImageSet, ImageSet | None]:
    """(train, held-out) images of ``opts.data`` at ``info["image_size"]``, split as the
    run split them: the run's own data (``info["data"]``) keeps its split settings, and
    folders without test/ split with ``opts.seed`` (None: the run's, ``info["seed"]``).
    The caps (``--per-class``) are the user's own here, so no CapWarning.

    Raises:
        SimSiamError: no held-out images (``need_test``) or no labels (``need_labels``).
    """
    over = {"data.source": opts.data, "data.image_size": info["image_size"],
            "data.per_class": opts.per_class, "data.test_per_class": opts.test_per_class}
    run = info.get("data") or {}
    if run.get("source") and Path(run["source"]) == Path(opts.data):  # the run's own data:
        over |= {f"data.{k}": run[k] for k in RUN_SPLIT_KEYS if k in run}  # its split
    cfg = load_config(None, over)
    seed = opts.seed if opts.seed is not None else info["seed"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CapWarning)
        train, test = load_splits(cfg.data, seed, progress=not opts.no_progress)
    if test is None and need_test:
        raise SimSiamError(f"'{opts.data}' has no held-out images to evaluate on")
    if need_labels and not train.labelled:
        raise SimSiamError(f"'{opts.data}' has no labels (one class: a folder without class "
                           f"subfolders), so an accuracy would mean nothing; look at what the "
                           "encoder learned with `simsiam neighbors`, or at the label-free "
                           "figures of the run's metrics.jsonl / report")
    return train, test


def neighbor_data(data: str, info: dict[str, Any], progress: bool = True) -> list[ImageSet]:
    """Every image of ``data`` at ``info["image_size"]``, train and held-out parts (no
    split), the non-empty ones, in that order (``neighbors`` searches them all)."""
    cfg = load_config(None, {"data.source": data, "data.image_size": info["image_size"],
                             "data.holdout_fraction": 0.0})
    splits = load_data(cfg.data, info["seed"], progress=progress)
    return [s for s in (splits.train, splits.test) if s is not None and len(s)]

"""``simsiam linear``'s run: the probe a protocol asks for (:func:`run_probe`) and its
files (:func:`write_linear_result`): ``classifier.safetensors`` and ``linear.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from simsiam.data import ImageSet
from simsiam.errors import ConfigError
from simsiam.eval.linear import PROTOCOLS, ProbeResult, augmented_probe, linear_probe
from simsiam.fileio import atomic_write, display_path

__all__ = ["check_probe_options", "default_linear_out", "run_probe", "write_linear_result"]


def default_linear_out(checkpoint: Path) -> Path:
    """``RUN/linear`` for a checkpoint inside a run (``RUN/checkpoints/x.pt`` or
    ``RUN/backbone.safetensors``)."""
    run = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" \
        else checkpoint.parent
    return run / "linear"


def check_probe_options(protocol: str, lr: float | None) -> None:
    """Raises ConfigError: an ``lr`` for a protocol other than ``fast`` (the others use
    the paper's)."""
    if protocol != "fast" and lr is not None:
        raise ConfigError(f"--lr is for the fast protocol; --protocol {protocol} uses "
                          "the paper's lr")


def run_probe(protocol: str, backbone: nn.Module, info: dict[str, Any], train: ImageSet,
              test: ImageSet, device: torch.device, epochs: int | None = None,
              batch_size: int | None = None,
              lr: float | None = None) -> tuple[ProbeResult, nn.Module, int, float, str]:
    """The probe ``protocol`` asks for (``fast``, or a :data:`PROTOCOLS` key) on the frozen
    ``backbone``: (result, classifier, batch, base lr, optimizer). None: the protocol's
    epochs / batch / lr (fast: 100, 256, 0.1); the batch is capped at the training set.

    Under torchrun the fast probe's features are extracted shard by shard and gathered;
    every process then fits the same classifier on them.

    Raises:
        ConfigError: as :func:`check_probe_options`.
    """
    check_probe_options(protocol, lr)
    data = (backbone.to(device), train.images, train.labels, test.images, test.labels,
            len(train.classes), info["image_size"], info["normalize"])
    if protocol == "fast":
        batch = min(batch_size or 256, len(train))
        base_lr = 0.1 if lr is None else lr
        res, clf = linear_probe(*data, device, epochs or 100, batch, base_lr)
        return res, clf, batch, base_lr, "sgd"
    spec = PROTOCOLS[protocol]
    batch = min(batch_size or spec["batch_size"], len(train))
    res, clf = augmented_probe(*data, protocol, device, epochs, batch)
    return res, clf, batch, spec["base_lr"], spec["optimizer"]


def write_linear_result(out: Path, clf: nn.Module, classes: list[str],
                        record: dict[str, Any]) -> None:
    """``out/classifier.safetensors`` (with the class names in its metadata, a folder name
    that is not UTF-8 with ``\\xNN`` escapes: :func:`~simsiam.fileio.display_path`) and
    ``out/linear.json`` (``record``), each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in clf.state_dict().items()}
    atomic_write(out / "classifier.safetensors",
                 lambda tmp: save_file(state, str(tmp), metadata={"classes": json.dumps(
                     [display_path(c) for c in classes])}))
    text = json.dumps(record, indent=2)
    atomic_write(out / "linear.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))

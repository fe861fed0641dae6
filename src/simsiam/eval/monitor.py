"""The kNN monitor of a training run: one evaluation of the backbone on the held-out images.

Source: SIMSIAM.md section 4 (the InstDisc-style kNN monitor, k = 200, T = 0.1 on CIFAR).
Used by the trainer at the start and after every ``eval.knn_every`` epochs; under
``torchrun`` the feature extraction is sharded (:func:`simsiam.eval.knn.extract_features`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from simsiam.config import Config
from simsiam.data.dataset import ImageSet
from simsiam.eval.knn import extract_features, knn_top1
from simsiam.eval.linear import topk_accuracy


def monitor_record(backbone: nn.Module, train: ImageSet, test: ImageSet, cfg: Config,
                   device: torch.device, probe: nn.Module | None = None) -> dict[str, Any]:
    """kNN top-1 (percent) of ``backbone`` with the training images as the bank and the
    held-out images as queries, and the online probe's top-1 on the held-out features when
    ``probe`` is given: the fields of a ``knn`` record of ``metrics.jsonl``
    (``knn_top1``, ``k``, ``bank``, ``queries`` and maybe ``online_probe_top1``).

    The backbone and the probe are evaluated in eval mode and returned to train mode.
    """
    kw = dict(image_size=cfg.data.image_size, normalize=cfg.augment.normalize,
              device=device, batch_size=cfg.eval.batch_size,
              channels_last=cfg.train.channels_last, l2_normalize=False)
    bank = extract_features(backbone, train.images, **kw)
    queries = extract_features(backbone, test.images, **kw)
    labels = torch.as_tensor(train.labels, device=device)
    test_labels = torch.as_tensor(test.labels, device=device)
    acc = knn_top1(bank, labels, queries, test_labels, len(train.classes), cfg.eval.knn_k,
                   cfg.eval.knn_t)
    record: dict[str, Any] = {"knn_top1": acc, "k": min(cfg.eval.knn_k, len(train)),
                              "bank": len(train), "queries": len(test)}
    if probe is not None:
        probe.eval()
        with torch.no_grad():
            record["online_probe_top1"] = topk_accuracy(probe(queries), test_labels, 1)
        probe.train()
    return record

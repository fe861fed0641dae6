"""The kNN monitor of a training run: the backbone evaluated on the held-out images.

Source: SIMSIAM.md section 4 (the InstDisc-style kNN monitor, k = 200, T = 0.1 on CIFAR).
Run by the trainer at the start (``eval.knn_at_start``) and after every
``eval.knn_every`` epochs and the last; under ``torchrun`` the feature extraction is
sharded (:func:`simsiam.eval.knn.extract_features`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from simsiam.config import Config
from simsiam.data.dataset import ImageSet
from simsiam.eval.collapse import effective_rank, rank_reference
from simsiam.eval.knn import extract_features, knn_top1
from simsiam.eval.probe import OnlineProbe


def monitor_record(backbone: nn.Module, train: ImageSet, test: ImageSet, cfg: Config,
                   device: torch.device, probe: OnlineProbe | None = None) -> dict[str, Any]:
    """kNN top-1 (percent) of ``backbone`` with the training images as the bank and the
    held-out images as queries, the effective rank (RankMe) of the held-out features (on at
    most ``eval.feature_rank_rows`` of them) beside that of an isotropic matrix of their shape, and
    the online probe's top-1 on the held-out features when ``probe`` is given: the fields of
    a ``knn`` record of ``metrics.jsonl`` (``knn_top1``, ``k``, ``bank``, ``queries``,
    ``feature_rank``, ``feature_rank_healthy`` and maybe ``online_probe_top1``).

    The backbone is evaluated in eval mode and returned to train mode.
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
    rows = min(len(test), cfg.eval.feature_rank_rows)
    record: dict[str, Any] = {"knn_top1": acc, "k": min(cfg.eval.knn_k, len(train)),
                              "bank": len(train), "queries": len(test),
                              "feature_rank": effective_rank(queries, rows).item(),
                              "feature_rank_healthy": rank_reference(rows, queries.shape[1])}
    if probe is not None:
        record["online_probe_top1"] = probe.top1(queries, test_labels)
    return record


class KnnMonitor:
    """When and how a run is evaluated on its held-out images.

    Args:
        train, test: the run's splits (``test`` None: the monitor never runs).
        cfg: the run's config (``eval.*``, view size and normalisation).
        device: the training device.
    """

    def __init__(self, train: ImageSet, test: ImageSet | None, cfg: Config,
                 device: torch.device) -> None:
        self.train, self.test, self.cfg, self.device = train, test, cfg, device

    def due(self, epochs_done: int) -> bool:
        """Whether to evaluate after ``epochs_done`` epochs: every ``eval.knn_every``
        epochs and after the last (never with ``knn_every`` 0)."""
        every = self.cfg.eval.knn_every
        return bool(every) and (epochs_done % every == 0
                                or epochs_done == self.cfg.train.epochs)

    def run(self, backbone: nn.Module, probe: OnlineProbe | None, state, logger,
            progress: bool) -> None:
        """Evaluate after ``state.epoch`` epochs (the probe from epoch 1 on): the accuracies
        go into ``state.knn`` / ``state.probe_top1`` (a
        :class:`~simsiam.train.state.RunState`), a ``knn`` record to ``logger``, and a line
        to the terminal with ``progress``. Nothing without held-out images."""
        if self.test is None:
            return
        epoch = state.epoch
        record = monitor_record(backbone, self.train, self.test, self.cfg, self.device,
                                probe if epoch > 0 else None)
        state.knn[epoch] = record["knn_top1"]
        text = f"epoch {epoch}: knn_top1 {record['knn_top1']:.2f}%"
        if "online_probe_top1" in record:
            state.probe_top1[epoch] = record["online_probe_top1"]
            text += f", online probe top1 {record['online_probe_top1']:.2f}%"
        logger.log({"kind": "knn", "step": state.step, "epoch": epoch} | record)
        if progress:
            tqdm.write(f"{text} ({record['queries']} held-out images)")

"""The monitor of a training run: the backbone evaluated on the held-out images.

At each evaluation (the start with ``eval.knn_at_start``, every ``eval.knn_every`` epochs
and after the last), on backbone (pool5) features:

- label-free signals, for every dataset (:mod:`simsiam.eval.labelfree`): augmented-copy
  retrieval top-1/top-5 (a fixed seeded pair of views of each of the first
  ``eval.label_free_images`` held-out images, searched among every training and held-out
  image), alignment of the two views, uniformity and the effective rank (RankMe) of the
  held-out features;
- with labels (two classes or more, :attr:`~simsiam.data.dataset.ImageSet.labelled`): the
  kNN monitor (SIMSIAM.md section 4: InstDisc-style, k = 200, T = 0.1) and the online
  probe's held-out top-1. A flat folder has one class: no accuracy is computed for it.

Each evaluation is an ``eval`` record of ``metrics.jsonl`` (runs of simsiam 0.1 wrote
``knn``; :func:`simsiam.train.logger.eval_records` reads both). Under ``torchrun`` the
feature extraction is sharded (:func:`simsiam.eval.knn.extract_features`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from simsiam.augment.views import ViewAugment
from simsiam.config import Config
from simsiam.data.types import ImageSet
from simsiam.eval.knn import extract_features, knn_top1
from simsiam.eval.labelfree import FixedViews, alignment, copy_retrieval, uniformity
from simsiam.eval.probe import OnlineProbe
from simsiam.eval.retrieval import retrieval_line, retrieval_record
from simsiam.measures import effective_rank, rank_reference


def label_free_record(bank: torch.Tensor, queries: torch.Tensor,
                      views: tuple[torch.Tensor, torch.Tensor] | None,
                      rank_rows: int) -> dict[str, Any]:
    """The label-free fields of an ``eval`` record from backbone features.

    Args:
        bank: ``(N, c)`` features of the training images.
        queries: ``(M, c)`` features of the held-out images (evaluation transform).
        views: features ``(n, c)`` of the two fixed views of held-out images ``0..n-1``,
            or None (no retrieval nor alignment).
        rank_rows: at most this many held-out rows for the effective rank and uniformity.

    Returns:
        ``feature_rank``, ``feature_rank_healthy``, ``uniformity`` (M >= 2) and with
        ``views``: ``copy_top1``, ``copy_top5`` (percent; each view searches the
        gallery of the M held-out and N training images), ``alignment``,
        ``copy_queries``, ``copy_gallery``.
    """
    rows = min(len(queries), rank_rows)
    record: dict[str, Any] = {"feature_rank": effective_rank(queries, rows).item(),
                              "feature_rank_healthy": rank_reference(rows, queries.shape[1])}
    if rows >= 2:
        record["uniformity"] = uniformity(queries[:rows]).item()
    if views is not None and len(views[0]):
        first, second = views
        n = len(first)
        gallery = torch.cat([queries, bank])  # held-out image i is gallery row i
        targets = torch.arange(n, device=queries.device).repeat(2)
        hits = copy_retrieval(torch.cat([first, second]), gallery, targets, (1, 5))
        record |= {"copy_top1": hits[1], "copy_top5": hits[5],
                   "alignment": alignment(first, second).item(), "copy_queries": 2 * n,
                   "copy_gallery": len(gallery)}
    return record


def monitor_record(backbone: nn.Module, train: ImageSet, test: ImageSet, cfg: Config,
                   device: torch.device, probe: OnlineProbe | None = None,
                   views: FixedViews | None = None) -> dict[str, Any]:
    """One evaluation of ``backbone``: the fields of an ``eval`` record (``bank``,
    ``queries``, ``labelled``, the label-free fields of :func:`label_free_record`; with
    labels ``knn_top1`` (percent) and ``k``, and ``online_probe_top1`` when ``probe`` is
    given).

    The backbone is evaluated in eval mode and returned to train mode.
    """
    kw = dict(image_size=cfg.data.image_size, normalize=cfg.augment.normalize,
              device=device, batch_size=cfg.eval.batch_size,
              channels_last=cfg.train.channels_last, l2_normalize=False)
    bank = extract_features(backbone, train.images, **kw)
    queries = extract_features(backbone, test.images, **kw)
    view_feats = (views.features(backbone, device, cfg.eval.batch_size,
                                 cfg.train.channels_last) if views is not None and len(views)
                  else None)
    record: dict[str, Any] = {"bank": len(train), "queries": len(test),
                              "labelled": train.labelled}
    record |= label_free_record(bank, queries, view_feats, cfg.eval.feature_rank_rows)
    if train.labelled:
        labels = torch.as_tensor(train.labels, device=device)
        test_labels = torch.as_tensor(test.labels, device=device)
        record["knn_top1"] = knn_top1(bank, labels, queries, test_labels, len(train.classes),
                                      cfg.eval.knn_k, cfg.eval.knn_t)
        record["k"] = min(cfg.eval.knn_k, len(train))
        if probe is not None:
            record["online_probe_top1"] = probe.top1(queries, test_labels)
    return record


def start_name(cfg: Config) -> str:
    """What epoch 0 evaluates: ``random init``, or the backbone of ``model.image_init``."""
    return "image tower from model.image_init" if cfg.model.image_init else "random init"


def monitor_line(record: dict[str, Any]) -> str:
    """:func:`monitor_text` and the number of held-out images it was measured on."""
    return f"{monitor_text(record)} ({record['queries']} held-out images)"


def monitor_text(record: dict[str, Any]) -> str:
    """The monitor's figures of an ``eval`` record on one line, e.g. ``knn_top1 31.20%,
    online probe top1 27.80%, copy top1 26.0% top5 45.7%, align 0.81, uniform -2.95,
    feature rank 42.7/97.4``."""
    parts = []
    if "retrieval_i2t_r1" in record:
        parts.append(retrieval_line(record))
    if "knn_top1" in record:
        parts.append(f"knn_top1 {record['knn_top1']:.2f}%")
    if "online_probe_top1" in record:
        parts.append(f"online probe top1 {record['online_probe_top1']:.2f}%")
    if "copy_top1" in record:
        parts.append(f"copy top1 {record['copy_top1']:.1f}% top5 {record['copy_top5']:.1f}%, "
                     f"align {record['alignment']:.3f}")
    if "uniformity" in record:
        parts.append(f"uniform {record['uniformity']:.3f}")
    parts.append(f"feature rank {record['feature_rank']:.1f}/"
                 f"{record['feature_rank_healthy']:.1f}")
    return ", ".join(parts)


def caption_retrieval(model: nn.Module, test: ImageSet, cfg: Config,
                      device: torch.device) -> dict[str, Any]:
    """Text-image retrieval on the held-out images and all their captions, for a method
    whose batches are ``captions`` (:func:`simsiam.eval.retrieval.retrieval_record`); none
    without captions."""
    if getattr(test, "captions", None) is None or len(test) == 0:
        return {}
    return retrieval_record(model, test.images, test.captions, cfg.data.image_size,
                            cfg.augment.normalize, device, cfg.eval.batch_size)


def no_held_out(model: nn.Module, test: ImageSet, cfg: Config,
                device: torch.device) -> dict[str, Any]:
    """A kind of batch with no held-out figures of its own: none."""
    return {}


# kind of batch (``Method.batch_kind``, as BATCH_LOADERS) -> the method's own held-out
# figures, merged into the monitor's ``eval`` record
HELD_OUT = {"views": no_held_out, "captions": caption_retrieval}


class Monitor:
    """When and how a run is evaluated on its held-out images.

    Args:
        train, test: the run's splits (``test`` None or empty: the monitor never runs).
        cfg: the run's config (``eval.*``, the view recipe, size and normalisation).
        device: the training device.
    """

    def __init__(self, train: ImageSet, test: ImageSet | None, cfg: Config,
                 device: torch.device) -> None:
        self.train, self.test, self.cfg, self.device = train, test, cfg, device
        self.views = None
        if test is not None and cfg.eval.label_free_images > 0:
            augment = ViewAugment(cfg.augment, cfg.data.image_size)
            self.views = FixedViews(test.images, augment, cfg.train.seed,
                                    cfg.eval.label_free_images)

    def due(self, epochs_done: int) -> bool:
        """Whether to evaluate after ``epochs_done`` epochs: every ``eval.knn_every``
        epochs and after the last (never with ``knn_every`` 0)."""
        every = self.cfg.eval.knn_every
        return bool(every) and (epochs_done % every == 0
                                or epochs_done == self.cfg.train.epochs)

    def run(self, model: nn.Module, probe: OnlineProbe | None, state, logger,
            progress: bool) -> dict[str, Any] | None:
        """Evaluate ``model`` (a :class:`~simsiam.methods.base.Method`: its backbone, then
        the held-out figures of its kind of batch, :data:`HELD_OUT`: text-image retrieval)
        after ``state.epoch`` epochs (the probe from epoch 1 on): the figures go
        into ``state.evals`` (and ``state.knn`` / ``state.probe_top1`` with labels; a
        :class:`~simsiam.train.state.RunState`), an ``eval`` record to ``logger``, and a
        line to the terminal with ``progress``. Returns the record (None without
        held-out images)."""
        if self.test is None or len(self.test) == 0:
            return None
        epoch = state.epoch
        record = monitor_record(model.backbone, self.train, self.test, self.cfg, self.device,
                                probe if epoch > 0 else None, self.views)
        own = HELD_OUT.get(model.batch_kind, no_held_out)
        record |= own(model, self.test, self.cfg, self.device)
        state.record_eval(epoch, record)
        logger.log({"kind": "eval", "step": state.step, "epoch": epoch} | record)
        if progress:
            from tqdm import tqdm

            when = f" ({start_name(self.cfg)})" if epoch == 0 else ""
            tqdm.write(f"epoch {epoch}{when}: {monitor_line(record)}")
        return record


"""kNN monitor: weighted k-nearest-neighbour classification on frozen backbone features.

Source: SIMSIAM.md section 4 (InstDisc-style monitor): l2-normalised pool5 features of
the training images form the bank; each test image takes its k = 200 most similar bank
entries by cosine similarity, each votes for its class with weight exp(sim / T), T = 0.1
on CIFAR; the top-1 accuracy is reported in percent.

Under data parallelism (``torchrun``) every process extracts the features of its
contiguous shard of the images; the shards are gathered (padding dropped) so every
process holds the whole bank in the original order, and each process classifies its
shard of the queries; the correct counts are summed, so every image counts exactly once
and the accuracy equals the single-process one.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from simsiam.augment.views import eval_transform
from simsiam.distributed.ops import all_reduce_sum, gather_shards, shard_bounds, world_size


@torch.no_grad()
def extract_features(backbone: nn.Module, images: np.ndarray, image_size: int, normalize: str,
                     device: torch.device | str = "cpu", batch_size: int = 512,
                     channels_last: bool = False, l2_normalize: bool = True,
                     distributed: bool | None = None) -> torch.Tensor:
    """Backbone features of every image (l2-normalised unless told not to), in eval mode.

    Args:
        backbone: images -> ``(B, c)`` features. Put in eval mode for the pass (BN uses
            its running statistics) and returned to its previous mode afterwards.
        images: ``(N, H, W, 3)`` uint8.
        image_size: side fed to the backbone (see :func:`eval_transform`).
        normalize: auto|cifar10|imagenet.
        distributed: split the work over the processes of a data-parallel run and gather
            (``None``: when a process group of more than one process exists). Every
            process must call this with the same images.

    Returns:
        ``(N, c)`` float32 on ``device``, in the order of ``images``, on every process;
        unit l2 norm per row when ``l2_normalize``.
    """
    if distributed is None:
        distributed = world_size() > 1
    if distributed and len(images) > 0:
        lo, hi = shard_bounds(len(images))
        # An empty shard (more processes than images per shard) still needs the width.
        part = images[lo:hi] if hi > lo else images[:1]
        local = extract_features(backbone, part, image_size, normalize, device, batch_size,
                                 channels_last, l2_normalize, distributed=False)
        return gather_shards(local[: hi - lo], len(images))
    was_training = backbone.training
    backbone.eval()
    feats = []
    try:
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(np.array(images[start:start + batch_size]))
            x = eval_transform(batch, image_size, normalize).to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            f = backbone(x).float()
            feats.append(F.normalize(f, dim=1) if l2_normalize else f)
    finally:
        backbone.train(was_training)
    return torch.cat(feats)


@torch.no_grad()
def knn_predict(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor,
                num_classes: int, k: int = 200, temperature: float = 0.1,
                chunk: int = 1024) -> torch.Tensor:
    """Weighted kNN class scores on cosine similarity.

    Args:
        bank: ``(N, c)`` features; bank_labels ``(N,)`` int64.
        queries: ``(M, c)`` features. Both sides are l2-normalised here (a no-op for
            features from :func:`extract_features`), so the scale of a feature never
            changes its neighbours.
        num_classes: C.
        k: neighbours (capped at N). temperature: T in exp(sim / T).

    Returns:
        ``(M, C)`` float32 scores; ``argmax(dim=1)`` is the prediction.
    """
    k = min(k, bank.shape[0])
    if queries.shape[0] == 0:
        return torch.zeros(0, num_classes, device=queries.device)
    bank, queries = F.normalize(bank.float(), dim=1), F.normalize(queries.float(), dim=1)
    out = []
    for start in range(0, queries.shape[0], chunk):
        sim = queries[start:start + chunk] @ bank.T  # (m, N) cosine similarities
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = (top_sim / temperature).exp()
        scores = torch.zeros(sim.shape[0], num_classes, device=sim.device)
        scores.scatter_add_(1, bank_labels[top_idx], weights)
        out.append(scores)
    return torch.cat(out)


def knn_top1(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor,
             query_labels: torch.Tensor, num_classes: int, k: int = 200,
             temperature: float = 0.1, distributed: bool | None = None) -> float:
    """Top-1 accuracy in percent (0-100) of :func:`knn_predict` on labelled queries.

    ``distributed`` (``None``: when a process group of more than one process exists):
    every process holds the whole bank and all queries and classifies its shard of the
    queries; the correct counts are summed over processes, so each query counts once.
    """
    if distributed is None:
        distributed = world_size() > 1
    m = queries.shape[0]
    lo, hi = shard_bounds(m) if distributed else (0, m)
    pred = knn_predict(bank, bank_labels, queries[lo:hi], num_classes, k,
                       temperature).argmax(dim=1)
    correct = (pred == query_labels[lo:hi].to(pred.device)).sum()
    if distributed:
        correct = all_reduce_sum(correct)
    return 100.0 * int(correct) / m if m else float("nan")


def knn_evaluate(backbone: nn.Module, train_images: np.ndarray, train_labels: np.ndarray,
                 test_images: np.ndarray, test_labels: np.ndarray, num_classes: int,
                 image_size: int, normalize: str, device: torch.device | str = "cpu",
                 k: int = 200, temperature: float = 0.1, batch_size: int = 512,
                 channels_last: bool = False) -> float:
    """kNN top-1 (percent) of ``backbone``: train images as the bank, test images as queries."""
    kw = dict(image_size=image_size, normalize=normalize, device=device, batch_size=batch_size,
              channels_last=channels_last)
    bank = extract_features(backbone, train_images, **kw)
    queries = extract_features(backbone, test_images, **kw)
    return knn_top1(bank, torch.as_tensor(train_labels, device=bank.device), queries,
                    torch.as_tensor(test_labels), num_classes, k, temperature)

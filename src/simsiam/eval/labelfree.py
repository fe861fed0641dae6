"""Label-free quality signals: what the monitor can say about an encoder without labels.

- **Alignment** (Wang & Isola, "Understanding Contrastive Representation Learning through
  Alignment and Uniformity on the Hypersphere", ICML 2020, eq. 4 with alpha = 2):
  ``E ||f(x) - f(y)||^2`` over positive pairs (two augmented views of one image) of
  l2-normalised features. Range [0, 4]; lower = views of one image land closer.
- **Uniformity** (same paper, eq. 5 with t = 2): ``log E exp(-2 ||f(x) - f(y)||^2)`` over
  pairs of different images. Range [-4, 0] on the unit sphere; 0 = every image at one
  point (collapsed), lower = spread more evenly.
- **Augmented-copy retrieval**: each query is an augmented view of an image; the gallery
  holds every image once (evaluation transform); top-k = percent of queries whose own
  image is among their k most cosine-similar gallery entries. A random encoder already
  finds some copies (colour statistics survive a crop); training with the same
  augmentations should raise it. The views are drawn from a fixed seed, so the figure
  of one epoch is comparable with the next.
- The effective rank of the features (RankMe) is :func:`simsiam.eval.collapse.effective_rank`.

All features here are backbone (pool5) features: what a user embeds and searches.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from simsiam.augment.views import ViewAugment

# view_seed(seed, _EVAL_STREAM, i): the monitor's fixed views, never a training epoch's.
_EVAL_STREAM = 2**31 - 2


def alignment(x: torch.Tensor, y: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    """Mean ``||x_i - y_i||^alpha`` of l2-normalised rows (Wang & Isola 2020, eq. 4).

    Args:
        x, y: ``(N, D)`` features of the two views of N images (normalised here).
        alpha: the exponent (the paper's default 2).

    Returns:
        0-dim float32 tensor in [0, 2^alpha].

    Raises:
        ValueError: ``x`` and ``y`` differ in shape, or hold no rows.
    """
    if x.shape != y.shape or x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"alignment needs two (N, D) tensors of one shape with N > 0, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    x, y = F.normalize(x.float(), dim=1), F.normalize(y.float(), dim=1)
    return (x - y).norm(dim=1).pow(alpha).mean()


def uniformity(x: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """``log mean_{i<j} exp(-t ||x_i - x_j||^2)`` of l2-normalised rows (Wang & Isola
    2020, eq. 5).

    Args:
        x: ``(N, D)`` features of N >= 2 different images (normalised here).
        t: the temperature (the paper's default 2).

    Returns:
        0-dim float32 tensor in [-4t/2, 0] (0: all rows equal).

    Raises:
        ValueError: fewer than 2 rows.
    """
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"uniformity needs an (N, D) tensor with N >= 2, got {tuple(x.shape)}")
    x = F.normalize(x.float(), dim=1)
    sq = torch.pdist(x, p=2).pow(2)
    # log-mean-exp, stable: logsumexp minus log of the number of pairs
    return torch.logsumexp(-t * sq, dim=0) - np.log(sq.numel())


def copy_retrieval(queries: torch.Tensor, gallery: torch.Tensor, targets: torch.Tensor,
                   ks: tuple[int, ...] = (1, 5), chunk: int = 1024) -> dict[int, float]:
    """Top-k accuracy (percent) of finding each query's own image in the gallery by cosine.

    Args:
        queries: ``(M, D)`` features of augmented views.
        gallery: ``(G, D)`` features of the images, one row each.
        targets: ``(M,)`` int64, the gallery row of each query's image.
        ks: the k of each top-k (capped at G).

    Returns:
        ``{k: percent}`` for each k of ``ks``.

    Raises:
        ValueError: shapes that do not match, or a target outside the gallery.
    """
    if queries.shape[0] != targets.shape[0] or queries.shape[1:] != gallery.shape[1:]:
        raise ValueError(f"copy_retrieval: {tuple(queries.shape)} queries, "
                         f"{tuple(targets.shape)} targets, gallery {tuple(gallery.shape)}")
    if len(targets) and not 0 <= int(targets.min()) <= int(targets.max()) < len(gallery):
        raise ValueError(f"copy_retrieval: targets must index the {len(gallery)} gallery rows")
    q, g = F.normalize(queries.float(), dim=1), F.normalize(gallery.float(), dim=1)
    kmax = min(max(ks), g.shape[0])
    ranks = []
    for a in range(0, len(q), chunk):
        top = (q[a:a + chunk] @ g.T).topk(kmax, dim=1).indices
        hit = top == targets[a:a + chunk].to(top.device)[:, None]
        # position of the target in the top list, kmax when it is not in it
        ranks.append(torch.where(hit.any(1), hit.float().argmax(1), torch.full_like(
            hit[:, 0], kmax, dtype=torch.long)))
    r = torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.long)
    m = max(len(r), 1)
    return {k: 100.0 * int((r < min(k, kmax)).sum()) / m for k in ks}


class FixedViews:
    """Two augmented views of each of the first ``count`` images of a set, drawn from a
    fixed seed: the same pixels at every evaluation of a run (and in every run with the
    same seed, view size and recipe). The views are drawn again at each call rather than
    kept (no memory held between evaluations).

    Args:
        images: ``(N, H, W, 3)`` uint8.
        augment: the run's view recipe (:class:`~simsiam.augment.views.ViewAugment`).
        seed: the run's seed.
        count: how many images (at most N).
    """

    def __init__(self, images: np.ndarray, augment: ViewAugment, seed: int,
                 count: int) -> None:
        self.images, self.augment, self.seed = images, augment, seed
        self.n = min(count, len(images))

    def __len__(self) -> int:
        return self.n

    def views(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The two views ``(stop - start, 3, S, S)`` float32 of images ``start:stop``."""
        from simsiam.data.sampling import view_seed

        first, second = [], []
        for i in range(start, stop):
            img = torch.from_numpy(np.array(self.images[i])).permute(2, 0, 1)
            g = torch.Generator().manual_seed(view_seed(self.seed, _EVAL_STREAM, i))
            first.append(self.augment(img, g, 0))
            second.append(self.augment(img, g, 1))
        return torch.stack(first), torch.stack(second)

    @torch.no_grad()
    def features(self, backbone: nn.Module, device: torch.device, batch_size: int = 512,
                 channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone features ``(n, c)`` float32 of the first and of the second views, in
        eval mode (the backbone's mode is restored afterwards)."""
        was_training = backbone.training
        backbone.eval()
        out: tuple[list, list] = ([], [])
        try:
            for a in range(0, self.n, batch_size):
                for part, x in zip(out, self.views(a, min(a + batch_size, self.n)),
                                   strict=True):
                    x = x.to(device)
                    if channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    part.append(backbone(x).float())
        finally:
            backbone.train(was_training)
        return torch.cat(out[0]), torch.cat(out[1])

"""Linear probe on a frozen backbone: the fast protocol on cached features.

Source: SIMSIAM.md section 4. The backbone stays in eval mode (its BatchNorm statistics
never change; :func:`linear_probe` checks this after training, as the official code
does). SimSiam features are badly scaled for a small-lr probe, so the fast protocol puts
an affine-free BatchNorm in front of the Linear and trains on features extracted once
from the un-augmented images: SGD momentum 0.9, cosine lr, cross-entropy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from simsiam.errors import SimSiamError
from simsiam.eval.knn import extract_features


class LinearClassifier(nn.Module):
    """BN(c, affine=False) then Linear(c, num_classes): features ``(B, c)`` -> logits.

    The Linear is initialised N(0, 0.01) with zero bias (official linear-probe code).
    """

    def __init__(self, dim: int, num_classes: int, batchnorm: bool = True) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, affine=False) if batchnorm else nn.Identity()
        self.fc = nn.Linear(dim, num_classes)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x))


@dataclass
class ProbeResult:
    """Top-1 / top-5 accuracy in percent on the held-out images."""

    top1: float
    top5: float
    train_images: int
    test_images: int
    epochs: int


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Percent of rows whose label is among the ``k`` largest logits (k capped at C)."""
    k = min(k, logits.shape[1])
    hit = (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1)
    return 100.0 * hit.float().mean().item()


def train_on_features(train_x: torch.Tensor, train_y: torch.Tensor, num_classes: int,
                      epochs: int = 100, batch_size: int = 256, lr: float = 0.1,
                      seed: int = 0) -> LinearClassifier:
    """Fit :class:`LinearClassifier` on cached features ``(N, c)`` with labels ``(N,)``.

    SGD (momentum 0.9, no weight decay), lr ``lr * batch_size / 256`` decayed by a
    per-step cosine to 0, shuffled mini-batches from ``seed``.
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    clf = LinearClassifier(train_x.shape[1], num_classes).to(train_x.device)
    peak = lr * batch_size / 256
    opt = torch.optim.SGD(clf.parameters(), lr=peak, momentum=0.9)
    n = train_x.shape[0]
    steps_per_epoch = max(1, n // batch_size)
    total = epochs * steps_per_epoch
    step = 0
    clf.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=g).to(train_x.device)
        for i in range(steps_per_epoch):
            idx = order[i * batch_size:(i + 1) * batch_size]
            for group in opt.param_groups:
                group["lr"] = peak * 0.5 * (1 + math.cos(math.pi * step / total))
            loss = F.cross_entropy(clf(train_x[idx]), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    return clf.eval()


def linear_probe(backbone: nn.Module, train_images: np.ndarray, train_labels: np.ndarray,
                 test_images: np.ndarray, test_labels: np.ndarray, num_classes: int,
                 image_size: int, normalize: str, device: torch.device | str = "cpu",
                 epochs: int = 100, batch_size: int = 256, lr: float = 0.1,
                 seed: int = 0) -> tuple[ProbeResult, LinearClassifier]:
    """The fast linear-probe protocol: features once, then a BN + Linear on them.

    Args:
        backbone: frozen; used in eval mode only.
        train_images, test_images: ``(N, H, W, 3)`` uint8; labels ``(N,)`` int.
        epochs, batch_size, lr: of the classifier's SGD (lr scaled by batch / 256).

    Returns:
        ``(ProbeResult, classifier)``.

    Raises:
        SimSiamError: the backbone's state changed during probing (it must not).
    """
    before = {k: v.detach().clone() for k, v in backbone.state_dict().items()}
    kw = dict(image_size=image_size, normalize=normalize, device=device, l2_normalize=False)
    with torch.no_grad():
        train_x = extract_features(backbone, train_images, **kw)
        test_x = extract_features(backbone, test_images, **kw)
    train_y = torch.as_tensor(train_labels, device=train_x.device)
    test_y = torch.as_tensor(test_labels, device=test_x.device)
    clf = train_on_features(train_x, train_y, num_classes, epochs, batch_size, lr, seed)
    with torch.no_grad():
        logits = clf(test_x)
    after = backbone.state_dict()
    changed = [k for k, v in before.items() if not torch.equal(v, after[k])]
    if changed:
        raise SimSiamError(f"the backbone changed during the linear probe: {changed[:5]}")
    result = ProbeResult(topk_accuracy(logits, test_y, 1), topk_accuracy(logits, test_y, 5),
                         len(train_y), len(test_y), epochs)
    return result, clf

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


def _snapshot(backbone: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in backbone.state_dict().items()}


def _check_unchanged(before: dict[str, torch.Tensor], backbone: nn.Module) -> None:
    """Raise if any tensor of the backbone's state (BN statistics included) changed."""
    after = backbone.state_dict()
    changed = [k for k, v in before.items() if not torch.equal(v, after[k])]
    if changed:
        raise SimSiamError(f"the backbone changed during the linear probe: {changed[:5]}")


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
    before = _snapshot(backbone)
    kw = dict(image_size=image_size, normalize=normalize, device=device, l2_normalize=False)
    with torch.no_grad():
        train_x = extract_features(backbone, train_images, **kw)
        test_x = extract_features(backbone, test_images, **kw)
    train_y = torch.as_tensor(train_labels, device=train_x.device)
    test_y = torch.as_tensor(test_labels, device=test_x.device)
    clf = train_on_features(train_x, train_y, num_classes, epochs, batch_size, lr, seed)
    with torch.no_grad():
        logits = clf(test_x)
    _check_unchanged(before, backbone)
    result = ProbeResult(topk_accuracy(logits, test_y, 1), topk_accuracy(logits, test_y, 5),
                         len(train_y), len(test_y), epochs)
    return result, clf


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al., 2017).

    For every parameter with more than one dimension (weights; biases and norm
    parameters are left as plain SGD), the update ``g + weight_decay * w`` is scaled by
    the trust ratio ``trust * ||w|| / ||g + weight_decay * w||`` (1 when either norm is 0)
    before the momentum buffer. SIMSIAM.md section 4: trust coefficient 0.001, wd 0.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust: float = 0.001) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      trust=trust))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 (torch.optim.Optimizer.step)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad
                if p.ndim > 1:
                    update = update.add(p, alpha=group["weight_decay"])
                    w_norm, u_norm = p.norm(), update.norm()
                    ratio = torch.where((w_norm > 0) & (u_norm > 0),
                                        group["trust"] * w_norm / u_norm,
                                        torch.ones_like(w_norm))
                    update = update * ratio
                state = self.state[p]
                if "momentum" not in state:
                    state["momentum"] = torch.clone(update).detach()
                else:
                    state["momentum"].mul_(group["momentum"]).add_(update)
                p.add_(state["momentum"], alpha=-group["lr"])


# The paper's protocols, trained on augmented images through the frozen backbone.
PROTOCOLS = {
    # Official ImageNet linear evaluation: LARS, base lr 0.1 x batch/256, batch 4096,
    # 90 epochs, cosine, weight decay 0.
    "paper": dict(optimizer="lars", base_lr=0.1, batch_size=4096, epochs=90),
    # CIFAR reproductions: SGD momentum 0.9, lr 30 at batch 256, 100 epochs, cosine.
    "cifar": dict(optimizer="sgd", base_lr=30.0, batch_size=256, epochs=100),
}


def augmented_probe(backbone: nn.Module, train_images: np.ndarray, train_labels: np.ndarray,
                    test_images: np.ndarray, test_labels: np.ndarray, num_classes: int,
                    image_size: int, normalize: str, protocol: str,
                    device: torch.device | str = "cpu", epochs: int | None = None,
                    batch_size: int | None = None, seed: int = 0,
                    ) -> tuple[ProbeResult, nn.Module]:
    """Linear probe by one of :data:`PROTOCOLS`: a plain Linear (init N(0, 0.01)) trained on
    frozen eval-mode backbone features of randomly resized-cropped (scale 0.08-1) and
    flipped training images, evaluated on the un-augmented held-out images.

    Raises:
        ConfigError: unknown protocol.
        SimSiamError: the backbone's state changed (it must not).
    """
    from simsiam.augment.views import SimSiamAugment
    from simsiam.config import AugmentConfig
    from simsiam.data.dataset import view_seed
    from simsiam.errors import ConfigError

    if protocol not in PROTOCOLS:
        raise ConfigError(f"--protocol {protocol!r} is unknown: choose fast, "
                          f"{', '.join(PROTOCOLS)}")
    spec = PROTOCOLS[protocol]
    epochs = epochs or spec["epochs"]
    batch_size = min(batch_size or spec["batch_size"], len(train_labels))
    before = _snapshot(backbone)
    backbone.eval()
    aug = SimSiamAugment(AugmentConfig(crop_scale=[0.08, 1.0], jitter_prob=0.0,
                                       grayscale_prob=0.0, blur_prob=0.0,
                                       normalize=normalize), image_size)
    torch.manual_seed(seed)
    dim = extract_features(backbone, train_images[:2], image_size, normalize, device,
                           distributed=False).shape[1]
    clf = LinearClassifier(dim, num_classes, batchnorm=False).to(device)
    peak = spec["base_lr"] * batch_size / 256
    opt = (LARS(clf.parameters(), lr=peak) if spec["optimizer"] == "lars"
           else torch.optim.SGD(clf.parameters(), lr=peak, momentum=0.9))
    labels = torch.as_tensor(train_labels, device=device)
    steps = len(train_labels) // batch_size
    total, step = epochs * steps, 0
    for epoch in range(epochs):
        order = torch.randperm(len(train_labels),
                               generator=torch.Generator().manual_seed(seed + epoch))
        for i in range(steps):
            idx = order[i * batch_size:(i + 1) * batch_size].tolist()
            views = []
            for j in idx:
                img = torch.from_numpy(np.array(train_images[j])).permute(2, 0, 1)
                views.append(aug(img, torch.Generator().manual_seed(view_seed(seed, epoch, j))))
            with torch.no_grad():
                feats = backbone(torch.stack(views).to(device)).float()
            for group in opt.param_groups:
                group["lr"] = peak * 0.5 * (1 + math.cos(math.pi * step / total))
            loss = F.cross_entropy(clf(feats), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    with torch.no_grad():
        logits = clf(extract_features(backbone, test_images, image_size, normalize, device,
                                      l2_normalize=False))
    _check_unchanged(before, backbone)
    y = torch.as_tensor(test_labels, device=logits.device)
    return ProbeResult(topk_accuracy(logits, y, 1), topk_accuracy(logits, y, 5),
                       len(train_labels), len(test_labels), epochs), clf.eval()

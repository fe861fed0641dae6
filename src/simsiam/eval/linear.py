"""Linear probe on a frozen backbone: the fast protocol on cached features.

Source: SIMSIAM.md section 4. The backbone stays in eval mode (its BatchNorm statistics
never change; :func:`linear_probe` checks this after training, as the official code
does). SimSiam features are badly scaled for a small-lr probe, so the fast protocol puts
an affine-free BatchNorm in front of the Linear and trains on features extracted once
from the un-augmented images: SGD momentum 0.9, cosine lr, cross-entropy.

The augmented protocols (:data:`PROTOCOLS`, :func:`augmented_probe`) follow the official
SimSiam/MoCo ``main_lincls.py``: a plain Linear on randomly cropped and flipped images,
SGD momentum 0.9 (wrapped in LARC for ``paper``), lr by a cosine evaluated once per epoch,
and an evaluation after every epoch whose best top-1 is reported next to the last one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

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
    """Accuracy in percent on the held-out images.

    ``top1`` / ``top5`` are those of the classifier after the LAST epoch (the one returned
    and saved). ``best_top1`` is the highest top-1 of the evaluations after each epoch and
    ``best_epoch`` (1-based) the first epoch that reached it, as ``best_acc1`` in the
    official ``main_lincls.py``; ``epoch_top1[i]`` is the top-1 after epoch ``i + 1`` and
    ``epoch_lr[i]`` the lr of that epoch's first step (the augmented protocols hold it for
    the whole epoch). ``None`` / empty when no per-epoch evaluation was made.
    """

    top1: float
    top5: float
    train_images: int
    test_images: int
    epochs: int
    best_top1: float | None = None
    best_epoch: int | None = None
    epoch_top1: list[float] = field(default_factory=list)
    epoch_lr: list[float] = field(default_factory=list)


def best_of(epoch_top1: list[float]) -> tuple[float, int]:
    """``(best top-1, its 1-based epoch)`` of per-epoch top-1s; the first epoch wins a tie
    (``main_lincls.py`` updates ``best_acc1`` only on ``acc1 > best_acc1``).

    Raises:
        ValueError: ``epoch_top1`` is empty.
    """
    if not epoch_top1:
        raise ValueError("no per-epoch top-1 to take the best of")
    best = max(range(len(epoch_top1)), key=lambda i: (epoch_top1[i], -i))
    return epoch_top1[best], best + 1


class EpochScores:
    """The ``on_epoch`` hook of :func:`train_on_features`: top-1 (percent) of the classifier
    on held-out features ``(N, c)`` with labels ``(N,)`` after each epoch, and that epoch's
    lr, in ``top1`` and ``lr``."""

    def __init__(self, test_x: torch.Tensor, test_y: torch.Tensor) -> None:
        self.test_x, self.test_y = test_x, test_y
        self.top1: list[float] = []
        self.lr: list[float] = []

    def __call__(self, epoch: int, lr: float, clf: LinearClassifier) -> None:
        self.top1.append(topk_accuracy(clf(self.test_x), self.test_y, 1))
        self.lr.append(lr)


def epoch_cosine_lr(peak: float, epoch: int, epochs: int) -> float:
    """``main_lincls.py``'s ``adjust_learning_rate``: the lr of 0-based ``epoch`` of
    ``epochs``, ``peak * 0.5 * (1 + cos(pi * epoch / epochs))``, set at the epoch's start.
    """
    return peak * 0.5 * (1 + math.cos(math.pi * epoch / epochs))


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
                      seed: int = 0,
                      on_epoch: Callable[[int, float, LinearClassifier], None] | None = None,
                      ) -> LinearClassifier:
    """Fit :class:`LinearClassifier` on cached features ``(N, c)`` with labels ``(N,)``.

    SGD (momentum 0.9, no weight decay), lr ``lr * batch_size / 256`` decayed by a
    per-step cosine to 0, shuffled mini-batches from ``seed``. ``on_epoch(epoch, lr, clf)``
    (0-based epoch, lr of its first step) is called after each epoch with the classifier
    in eval mode; training resumes in train mode (an eval-mode forward leaves the
    BatchNorm's running statistics alone, so the fit is the same with or without it).
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
    for epoch in range(epochs):
        order = torch.randperm(n, generator=g).to(train_x.device)
        first_lr = peak * 0.5 * (1 + math.cos(math.pi * step / total))
        for i in range(steps_per_epoch):
            idx = order[i * batch_size:(i + 1) * batch_size]
            for group in opt.param_groups:
                group["lr"] = peak * 0.5 * (1 + math.cos(math.pi * step / total))
            loss = F.cross_entropy(clf(train_x[idx]), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        if on_epoch is not None:
            clf.eval()
            with torch.no_grad():
                on_epoch(epoch, first_lr, clf)
            clf.train()
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
        ``(ProbeResult, classifier)``: top-1/top-5 of the last epoch, and the best epoch's
        top-1 from an evaluation on the cached test features after every epoch (one
        forward of BN + Linear over ``(N_test, c)``: cheap next to an epoch of training).

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
    scores = EpochScores(test_x, test_y)
    clf = train_on_features(train_x, train_y, num_classes, epochs, batch_size, lr, seed,
                            on_epoch=scores)
    epoch_top1, epoch_lr = scores.top1, scores.lr
    with torch.no_grad():
        logits = clf(test_x)
    _check_unchanged(before, backbone)
    best_top1, best_epoch = best_of(epoch_top1) if epoch_top1 else (None, None)
    result = ProbeResult(topk_accuracy(logits, test_y, 1), topk_accuracy(logits, test_y, 5),
                         len(train_y), len(test_y), epochs, best_top1, best_epoch,
                         epoch_top1, epoch_lr)
    return result, clf


# The paper's protocols, trained on augmented images through the frozen backbone, as the
# official SimSiam main_lincls.py does: lr = base_lr x batch/256, set at the start of each
# epoch by a per-epoch cosine (adjust_learning_rate), SGD momentum 0.9, an evaluation
# after every epoch (best_acc1 reported next to the last epoch's).
PROTOCOLS = {
    # Official ImageNet linear evaluation (main_lincls.py --lars): SGD wrapped in apex's
    # LARC(trust_coefficient=0.001, clip=False), which scales every parameter, the bias
    # included; base lr 0.1, batch 4096, 90 epochs, weight decay 0.
    "paper": dict(optimizer="lars", base_lr=0.1, batch_size=4096, epochs=90,
                  weight_decay=0.0),
    # CIFAR reproductions: main_lincls.py without --lars at MoCo's linear lr 30 (batch
    # 256), 100 epochs, weight decay 0; the same per-epoch cosine.
    "cifar": dict(optimizer="sgd", base_lr=30.0, batch_size=256, epochs=100,
                  weight_decay=0.0),
}


def protocol_optimizer(name: str, params: Iterable[torch.Tensor], lr: float,
                       weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """The optimizer of a protocol: ``"sgd"`` (momentum 0.9) or ``"lars"``.

    ``"lars"`` is ``timm.optim.Lars`` set up as apex's ``LARC(SGD, trust_coefficient=0.001,
    clip=False)`` in ``main_lincls.py``: for every parameter ``p`` (bias included,
    ``always_adapt``) with gradient ``g``, when ``||p|| > 0`` and ``||g|| > 0`` the step uses
    ``(g + wd * p) * 0.001 * ||p|| / (||g|| + wd * ||p|| + 1e-8)`` in place of ``g``
    (unchanged otherwise), then SGD with momentum 0.9 and no further weight decay.

    Raises:
        ValueError: unknown ``name``.
    """
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    if name == "lars":
        from timm.optim import Lars

        return Lars(params, lr=lr, momentum=0.9, weight_decay=weight_decay, trust_coeff=0.001,
                    trust_clip=False, always_adapt=True)
    raise ValueError(f"unknown linear-probe optimizer {name!r}: sgd or lars")


def augmented_probe(backbone: nn.Module, train_images: np.ndarray, train_labels: np.ndarray,
                    test_images: np.ndarray, test_labels: np.ndarray, num_classes: int,
                    image_size: int, normalize: str, protocol: str,
                    device: torch.device | str = "cpu", epochs: int | None = None,
                    batch_size: int | None = None, seed: int = 0,
                    ) -> tuple[ProbeResult, nn.Module]:
    """Linear probe by one of :data:`PROTOCOLS`: a plain Linear (init N(0, 0.01)) trained on
    frozen eval-mode backbone features of randomly resized-cropped (scale 0.08-1) and
    flipped training images, evaluated on the un-augmented held-out images after EVERY
    epoch, as ``main_lincls.py`` does. The held-out features are extracted once: the backbone
    is frozen in eval mode and the held-out images are not augmented, so they are the same
    every epoch; only the Linear is re-applied. The lr is
    :func:`epoch_cosine_lr` of ``base_lr * batch_size / 256``, set at each epoch's start.

    Returns:
        ``(ProbeResult, classifier)``: ``top1`` / ``top5`` of the last epoch, ``best_top1``
        / ``best_epoch`` over the epochs, ``epoch_top1`` / ``epoch_lr`` per epoch.

    Raises:
        ConfigError: unknown protocol.
        SimSiamError: the backbone's state changed (it must not).
    """
    from simsiam.augment.views import ViewAugment
    from simsiam.config import AugmentConfig
    from simsiam.data.sampling import view_seed
    from simsiam.errors import ConfigError

    if protocol not in PROTOCOLS:
        raise ConfigError(f"--protocol {protocol!r} is unknown: choose fast, "
                          f"{', '.join(PROTOCOLS)}")
    spec = PROTOCOLS[protocol]
    epochs = epochs or spec["epochs"]
    batch_size = min(batch_size or spec["batch_size"], len(train_labels))
    before = _snapshot(backbone)
    backbone.eval()
    aug = ViewAugment(AugmentConfig(crop_scale=[0.08, 1.0], jitter_prob=0.0,
                                       grayscale_prob=0.0, blur_prob=0.0,
                                       normalize=normalize), image_size)
    torch.manual_seed(seed)
    dim = extract_features(backbone, train_images[:2], image_size, normalize, device,
                           distributed=False).shape[1]
    clf = LinearClassifier(dim, num_classes, batchnorm=False).to(device)
    peak = spec["base_lr"] * batch_size / 256
    opt = protocol_optimizer(spec["optimizer"], clf.parameters(), peak, spec["weight_decay"])
    labels = torch.as_tensor(train_labels, device=device)
    steps = len(train_labels) // batch_size
    with torch.no_grad():
        test_x = extract_features(backbone, test_images, image_size, normalize, device,
                                  l2_normalize=False)
    test_y = torch.as_tensor(test_labels, device=test_x.device)
    epoch_top1: list[float] = []
    epoch_lr: list[float] = []
    for epoch in range(epochs):
        lr_now = epoch_cosine_lr(peak, epoch, epochs)
        for group in opt.param_groups:
            group["lr"] = lr_now
        epoch_lr.append(lr_now)
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
            loss = F.cross_entropy(clf(feats), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            logits = clf(test_x)
        epoch_top1.append(topk_accuracy(logits, test_y, 1))
    _check_unchanged(before, backbone)
    best_top1, best_epoch = best_of(epoch_top1)
    return ProbeResult(epoch_top1[-1], topk_accuracy(logits, test_y, 5), len(train_labels),
                       len(test_labels), epochs, best_top1, best_epoch, epoch_top1,
                       epoch_lr), clf.eval()

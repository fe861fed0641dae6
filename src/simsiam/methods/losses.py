"""Losses shared by the methods.

Source: SIMSIAM.md section 1; paper section 3, eq. (1)-(4).
"""

from __future__ import annotations

import torch


def negative_cosine(p: torch.Tensor, z: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """D(p, z) = -cos(p, z), averaged over the batch, computed in float32.

    Args:
        p: predictions ``(B, d)``, any float dtype.
        z: targets ``(B, d)``; the caller passes them already detached (stop-gradient
            belongs to the model, not to the loss).
        eps: lower bound on each norm, so an all-zero row gives cosine 0, not NaN.

    Returns:
        A float32 scalar in [-1, 1]. Autocast is switched off inside, so the value is the
        float32 one even when ``p`` and ``z`` come from a bfloat16 forward pass.
    """
    with torch.autocast(device_type=p.device.type, enabled=False):
        p32, z32 = p.float(), z.float()
        p32 = p32 / p32.norm(dim=-1, keepdim=True).clamp_min(eps)
        z32 = z32 / z32.norm(dim=-1, keepdim=True).clamp_min(eps)
        return -(p32 * z32).sum(dim=-1).mean()


def cross_entropy_similarity(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """D(p, z) = -softmax(z) . log softmax(p), averaged over the batch, float32.

    The paper's section 4.5 variant of the similarity: softmax over the d channels (not
    over the batch), so z acts as a soft target distribution for p. Its minimum is the
    entropy of softmax(z), not -1. ``z`` arrives detached (stop-gradient in the model).

    Args:
        p, z: ``(B, d)`` float (any dtype; computed in float32 with autocast off).

    Returns:
        A float32 scalar >= 0.
    """
    with torch.autocast(device_type=p.device.type, enabled=False):
        target = torch.softmax(z.float(), dim=-1)
        return -(target * torch.log_softmax(p.float(), dim=-1)).sum(dim=-1).mean()


SIMILARITIES = {"cosine": negative_cosine, "cross_entropy": cross_entropy_similarity}


def siamese_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor,
                 similarity: str = "cosine", symmetric: bool = True) -> torch.Tensor:
    """The SimSiam loss with the paper's ablation switches, float32 scalar.

    ``symmetric`` (eq. 4): ``0.5 * D(p1, z2) + 0.5 * D(p2, z1)``; asymmetric (section 4.6):
    ``D(p1, z2)`` only. ``similarity``: "cosine" (eq. 1) or "cross_entropy" (section 4.5).
    ``z1`` and ``z2`` must already carry the stop-gradient.

    Raises:
        ValueError: unknown ``similarity``.
    """
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity {similarity!r} is unknown: choose one of "
                         f"{tuple(SIMILARITIES)}")
    d = SIMILARITIES[similarity]
    if not symmetric:
        return d(p1, z2)
    return 0.5 * d(p1, z2) + 0.5 * d(p2, z1)


def symmetric_negative_cosine(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor,
                              z2: torch.Tensor) -> torch.Tensor:
    """L = 0.5 * D(p1, z2) + 0.5 * D(p2, z1) (paper eq. 4), float32 scalar in [-1, 1].

    ``z1`` and ``z2`` must already carry the stop-gradient (see :class:`SimSiam`).
    """
    return 0.5 * negative_cosine(p1, z2) + 0.5 * negative_cosine(p2, z1)

"""Momentum pieces: the EMA of a target network, BYOL's tau schedule and MoCo's queue.

Source: SIMSIAM.md section 6; He et al. 2020 (MoCo, section 3.2: "dictionary as a queue",
"momentum update" theta_k <- m theta_k + (1 - m) theta_q), Grill et al. 2020 (BYOL,
section 3.1: xi <- tau xi + (1 - tau) theta, tau = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, m: float) -> None:
    """``target = m * target + (1 - m) * online`` for every parameter; buffers copied.

    The two modules must have the same architecture (``target`` is usually a
    ``copy.deepcopy`` of ``online``). The update runs under no_grad, in place, as the float
    ops ``t.mul_(m)`` then ``t.add_(o * (1 - m))``; buffers (BN running statistics, the
    batch counter) are copied from ``online``.

    Args:
        target: the momentum (key / target) network, updated in place.
        online: the network trained by the optimizer; read only.
        m: momentum in [0, 1]; 1 leaves the target unchanged, 0 copies the online network.

    Raises:
        ValueError: m outside [0, 1], or parameter / buffer names or shapes that differ.
    """
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"ema_update needs a momentum m in [0, 1], got {m}")
    tp, op = dict(target.named_parameters()), dict(online.named_parameters())
    tb, ob = dict(target.named_buffers()), dict(online.named_buffers())
    if tp.keys() != op.keys() or tb.keys() != ob.keys() or \
            any(tp[k].shape != op[k].shape for k in tp) or \
            any(tb[k].shape != ob[k].shape for k in tb):
        raise ValueError("ema_update needs a target with the online network's parameters and "
                         "buffers (same names and shapes); build it with copy.deepcopy(online)")
    names = list(tp)
    targets = [tp[k] for k in names]
    onlines = [op[k].detach() for k in names]
    if targets:
        torch._foreach_mul_(targets, m)
        torch._foreach_add_(targets, torch._foreach_mul(onlines, 1.0 - m))
    for k, buf in tb.items():
        buf.copy_(ob[k])


def momentum_copy(online: nn.Module) -> nn.Module:
    """A frozen deep copy of ``online`` (every parameter ``requires_grad=False``)."""
    target = copy.deepcopy(online)
    target.requires_grad_(False)
    return target


def byol_tau(step: int, total_steps: int, base: float = 0.996) -> float:
    """BYOL's target momentum: ``1 - (1 - base) * (cos(pi * step / total) + 1) / 2``.

    ``base`` at step 0, rising on a cosine to exactly 1.0 at ``step == total_steps``;
    ``step`` is clamped to ``[0, total_steps]``.

    Raises:
        ValueError: total_steps < 1 or base outside [0, 1].
    """
    if total_steps < 1 or not 0.0 <= base <= 1.0:
        raise ValueError(f"byol_tau needs total_steps >= 1 and base in [0, 1], got "
                         f"total_steps={total_steps} base={base}")
    step = min(max(step, 0), total_steps)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * step / total_steps) + 1.0) / 2.0


class Queue(nn.Module):
    """MoCo's dictionary: a fixed-length FIFO of keys ``(L, d)`` with a write pointer.

    The rows start as random unit vectors (MoCo's initialisation). :meth:`enqueue`
    writes a batch of keys over the oldest rows, in order, wrapping at the end. ``keys``
    and ``ptr`` are buffers, so they move with ``.to(device)`` and are saved in the
    state dict (a resumed run continues with the same queue). The pointer is kept on the
    device, so enqueueing never syncs with the host.

    Args:
        length: L, the number of keys (4096 on CIFAR, 65536 on ImageNet).
        dim: d, the width of a key.

    Raises:
        ValueError: a non-positive length or width.
    """

    def __init__(self, length: int, dim: int) -> None:
        super().__init__()
        if length < 1 or dim < 1:
            raise ValueError(f"Queue needs a positive length and width, got length={length} "
                             f"dim={dim}")
        self.length, self.dim = length, dim
        self.register_buffer("keys", nn.functional.normalize(torch.randn(length, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    def check_batch(self, batch_size: int) -> None:
        """Raise ValueError unless L is a multiple of ``batch_size`` (message names the fix)."""
        b = batch_size
        if b < 1 or self.length % b != 0:
            raise ValueError(f"the queue length {self.length} is not a multiple of the batch "
                             f"size {b}: set the queue length to a multiple of {b} (e.g. "
                             f"{max(1, self.length // max(b, 1)) * max(b, 1)}) or use a batch "
                             f"size that divides {self.length}")

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write ``keys`` ``(B, d)`` over the B oldest rows (detached, cast to the queue's dtype).

        Raises:
            ValueError: a width other than d, or L not a multiple of B (then a batch would
                straddle the end of the queue and the ages of its rows would be uneven).
        """
        if keys.dim() != 2 or keys.shape[1] != self.dim:
            raise ValueError(f"Queue of width {self.dim} cannot take keys of shape "
                             f"{tuple(keys.shape)}")
        b = keys.shape[0]
        self.check_batch(b)
        idx = (self.ptr + torch.arange(b, device=self.keys.device)) % self.length
        self.keys.index_copy_(0, idx, keys.detach().to(self.keys.dtype))
        self.ptr.copy_((self.ptr + b) % self.length)

    def forward(self) -> torch.Tensor:
        """The keys ``(L, d)`` (a buffer: no graph)."""
        return self.keys

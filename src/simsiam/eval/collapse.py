"""Collapse metric of the paper's Figure 2.

Source: SIMSIAM.md section 4; paper section 4.1: l2-normalise each output z, take the
standard deviation over the batch for each channel, average over channels. A healthy
encoder stays near 1/sqrt(d) (0.0221 for d = 2048); a collapsed one is near 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


@torch.no_grad()
def collapse_std(z: torch.Tensor) -> torch.Tensor:
    """Mean over channels of the per-channel std over the batch of l2-normalised ``z``.

    Args:
        z: ``(B, d)`` with B >= 2, any float dtype (computed in float32).

    Returns:
        A 0-dim float32 tensor on z's device (no host sync; call ``.item()`` to log);
        compare with :func:`healthy_std` (1/sqrt(d)).

    Raises:
        ValueError: fewer than two rows or not a 2-D tensor.
    """
    if z.dim() != 2 or z.shape[0] < 2:
        raise ValueError(f"collapse_std needs a (B, d) tensor with B >= 2, got {tuple(z.shape)}")
    zn = F.normalize(z.detach().float(), dim=1)
    return zn.std(dim=0).mean()


def healthy_std(dim: int) -> float:
    """1/sqrt(d): the collapse metric of d-dimensional unit vectors spread isotropically."""
    return 1.0 / math.sqrt(dim)


class CollapseGuard:
    """Flags a run whose collapse metric stays below ``ratio / sqrt(d)`` for ``patience`` steps.

    Feed it ``(step, collapse_std)`` pairs as they are logged; :meth:`update` returns True
    once, when the metric has been under the threshold at every check from some step s to
    the current step t with ``t - s + 1 >= patience``. A healthy SimSiam run sits near
    1/sqrt(d); one without stop-gradient falls to about 0 (paper Fig. 2).

    Args:
        dim: d, the width of z.
        ratio: threshold as a fraction of 1/sqrt(d) (0.3 by default).
        patience: steps the metric must stay under the threshold.
    """

    def __init__(self, dim: int, ratio: float = 0.3, patience: int = 100) -> None:
        self.threshold = ratio * healthy_std(dim)
        self.healthy = healthy_std(dim)
        self.patience = patience
        self.since: int | None = None
        self.fired = False
        self.last = float("nan")

    def update(self, step: int, value: float) -> bool:
        """Record the metric at ``step``; True the first time the guard fires."""
        self.last = value
        if value >= self.threshold:
            self.since = None
            return False
        if self.since is None:
            self.since = step
        if not self.fired and step - self.since + 1 >= self.patience:
            self.fired = True
            return True
        return False

    def message(self, step: int) -> str:
        """The warning text, with the numbers."""
        return (f"collapse: the collapse metric (std of l2-normalised z) has stayed below "
                f"{self.threshold:.4f} = {self.threshold / self.healthy:.2f}/sqrt(d) since step "
                f"{self.since} (now {self.last:.5f} at step {step}; healthy is about "
                f"{self.healthy:.4f}). The outputs are collapsing to a constant: check the "
                "stop-gradient, the predictor and the learning rate")

"""SimSiam: two views, one shared encoder, a predictor, symmetric negative cosine.

Source: SIMSIAM.md sections 1-2 (paper section 3, Algorithm 1, and the official builder).
The encoder f is backbone + projector; the predictor h maps z to p. The two views pass
through the encoder in two separate forward passes, so BatchNorm statistics are per view.
The stop-gradient is an out-of-place ``.detach()`` of z here, in the model, so the
returned z carries no graph and the loss function never needs to know about it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from simsiam.eval.collapse import collapse_std
from simsiam.methods.losses import SIMILARITIES, siamese_loss
from simsiam.models.heads import PredictionHead, ProjectionHead


@dataclass
class SimSiamOutput:
    """Outputs for views x1, x2: predictions p (with graph) and targets z (B, d).

    With stop-gradient on, ``z1`` and ``z2`` are detached (no ``grad_fn``). ``h1`` is the
    backbone's (pool5) output for x1, ``(B, c)``, with graph.
    """

    p1: torch.Tensor
    p2: torch.Tensor
    z1: torch.Tensor
    z2: torch.Tensor
    h1: torch.Tensor


class SimSiam(nn.Module):
    """The SimSiam model (paper section 3).

    Args:
        backbone: images ``(B, 3, H, W)`` -> features ``(B, feature_dim)``.
        feature_dim: c, the backbone's output width.
        dim: d, the projector's output width (2048).
        proj_hidden_dim: projector hidden width (c on ImageNet, 2048 on CIFAR).
        pred_hidden_dim: predictor bottleneck width (d/4).
        proj_layers: 3 on ImageNet, 2 on CIFAR.
        stop_gradient: False only for the paper's Figure 2 ablation (it collapses).
        predictor: "mlp" (default), "none" (p = z; Table 1a, collapses) or "fixed" (the
            MLP at its random initialisation, never trained; Table 1b).
        bn: BN on/off at (projector hidden, projector output, predictor hidden,
            predictor output); default (True, True, True, False) (Table 3).
        similarity: "cosine" (eq. 1) or "cross_entropy" (section 4.5).
        symmetric: the symmetric loss of eq. 4, or only D(p1, z2) (section 4.6).

    Raises:
        ValueError: unknown ``predictor`` or ``similarity``.
    """

    PREDICTORS = ("mlp", "none", "fixed")

    def __init__(self, backbone: nn.Module, feature_dim: int, dim: int = 2048,
                 proj_hidden_dim: int | None = None, pred_hidden_dim: int | None = None,
                 proj_layers: int = 3, stop_gradient: bool = True, predictor: str = "mlp",
                 bn: tuple[bool, bool, bool, bool] = (True, True, True, False),
                 similarity: str = "cosine", symmetric: bool = True) -> None:
        super().__init__()
        if predictor not in self.PREDICTORS:
            raise ValueError(f"predictor {predictor!r} is unknown: choose one of "
                             f"{self.PREDICTORS}")
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity {similarity!r} is unknown: choose one of "
                             f"{tuple(SIMILARITIES)}")
        self.backbone = backbone
        self.projector = ProjectionHead(feature_dim, proj_hidden_dim or feature_dim, dim,
                                        proj_layers, hidden_bn=bn[0], out_bn=bn[1])
        self.predictor: nn.Module = nn.Identity() if predictor == "none" else \
            PredictionHead(dim, pred_hidden_dim or dim // 4, hidden_bn=bn[2], out_bn=bn[3])
        if predictor == "fixed":
            self.predictor.requires_grad_(False)
        self.dim = dim
        self.stop_gradient = stop_gradient
        self.similarity = similarity
        self.symmetric = symmetric

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """f(x) = projector(backbone(x)): ``(B, 3, H, W)`` -> z ``(B, d)``, with graph."""
        return self.projector(self.backbone(x))

    def forward_views(self, x1: torch.Tensor, x2: torch.Tensor) -> SimSiamOutput:
        """Two separate encoder passes, the predictor, and the stop-gradient on z."""
        h1 = self.backbone(x1)
        z1 = self.projector(h1)
        z2 = self.encode(x2)
        p1 = self.predictor(z1)
        p2 = self.predictor(z2)
        if self.stop_gradient:
            z1, z2 = z1.detach(), z2.detach()
        return SimSiamOutput(p1=p1, p2=p2, z1=z1, z2=z2, h1=h1)

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss and metrics for ``views = [x1, x2]``, each ``(B, 3, H, W)`` float.

        Returns:
            ``(loss, metrics)``: the float32 scalar loss of paper eq. (4) (or its ablated
            form, see the constructor) and a dict of
            detached tensors: ``collapse_std`` (0-dim: std of l2-normalised z, mean over
            channels; healthy near 1/sqrt(d)) and ``features`` (``(B, c)``: the backbone
            output for x1, detached, for an online probe).

        Raises:
            ValueError: not exactly two views.
        """
        if len(views) != 2:
            raise ValueError(f"SimSiam takes exactly 2 views, got {len(views)}")
        out = self.forward_views(views[0], views[1])
        loss = siamese_loss(out.p1, out.p2, out.z1, out.z2, self.similarity, self.symmetric)
        return loss, {"collapse_std": collapse_std(out.z1), "features": out.h1.detach()}

    def param_groups(self) -> list[dict]:
        """Optimizer groups: ``encoder`` (backbone + projector) and ``predictor``.

        Frozen parameters (the projector's last bias, a fixed predictor) are left out, and
        so is a group with nothing to train. The trainer sets each group's lr;
        ``fix_pred_lr`` keeps the predictor group at the initial lr.
        """
        enc = [p for m in (self.backbone, self.projector) for p in m.parameters()
               if p.requires_grad]
        pred = [p for p in self.predictor.parameters() if p.requires_grad]
        groups = [{"name": "encoder", "params": enc}, {"name": "predictor", "params": pred}]
        return [g for g in groups if g["params"]]

    def on_step_end(self, step: int, total_steps: int) -> None:
        """Nothing to update after a step (no momentum encoder, no queue)."""

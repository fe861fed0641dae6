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

from simsiam.errors import require
from simsiam.methods.base import Method, RunShape, Traits, nonempty, param_group, step_metrics
from simsiam.methods.losses import SIMILARITIES, siamese_loss
from simsiam.methods.settings.simsiam import CARD, SimSiamConfig
from simsiam.models.heads import PredictionHead, ProjectionHead

PREDICTORS = ("mlp", "none", "fixed")


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


class SimSiam(Method):
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
        fix_pred_lr: the predictor's parameter group keeps the peak lr (``fixed_lr``;
            Table 1c, the official ``--fix-pred-lr``).

    Raises:
        ValueError: unknown ``predictor`` or ``similarity``.
    """

    card = CARD
    name = CARD.name
    Settings = SimSiamConfig
    traits = Traits(negatives=False, momentum_encoder=False, queue=False)
    PREDICTORS = PREDICTORS

    def __init__(self, backbone: nn.Module, feature_dim: int, dim: int = 2048,
                 proj_hidden_dim: int | None = None, pred_hidden_dim: int | None = None,
                 proj_layers: int = 3, stop_gradient: bool = True, predictor: str = "mlp",
                 bn: tuple[bool, bool, bool, bool] = (True, True, True, False),
                 similarity: str = "cosine", symmetric: bool = True,
                 fix_pred_lr: bool = True) -> None:
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
        self.fix_pred_lr = fix_pred_lr
        # z leaves an affine-free BN (bn[1]): every channel has zero mean and unit variance
        # over the batch, so the std of normalised z cannot see a collapse; its rank can
        self.collapse_measure = "rank" if bn[1] else "std"

    @classmethod
    def from_config(cls, settings: SimSiamConfig, backbone: nn.Module, feature_dim: int,
                    image_size: int = 224, steps_per_epoch: int = 0) -> SimSiam:
        """SimSiam from its section ``model.simsiam`` (the view size plays no part)."""
        s = settings
        return cls(backbone, feature_dim, dim=s.dim, proj_hidden_dim=s.proj_hidden_dim,
                   pred_hidden_dim=s.pred_hidden_dim, proj_layers=s.proj_layers,
                   stop_gradient=s.stop_gradient, predictor=s.predictor,
                   bn=(s.proj_hidden_bn, s.proj_out_bn, s.pred_hidden_bn, s.pred_out_bn),
                   similarity=s.similarity, symmetric=s.symmetric, fix_pred_lr=s.fix_pred_lr)

    @classmethod
    def check(cls, settings: SimSiamConfig, run: RunShape, where: str) -> None:
        """Widths, layer count and the ablation choices of ``model.simsiam``."""
        s, k = settings, "model.simsiam."
        require(s.proj_layers in (1, 2, 3), where, k + "proj_layers", s.proj_layers,
                "use 1, 2 or 3")
        require(s.dim > 0, where, k + "dim", s.dim, "use a positive width such as 2048")
        for key in ("proj_hidden_dim", "pred_hidden_dim"):
            v = getattr(s, key)
            require(v is None or v > 0, where, k + key, v, "use a positive width or null")
        require(s.pred_hidden_dim is not None or s.dim >= 4, where, k + "dim", s.dim,
                "use at least 4 so that the predictor's hidden width d/4 is positive")
        require(s.predictor in PREDICTORS, where, k + "predictor", s.predictor,
                f"choose one of {PREDICTORS}")
        require(s.similarity in SIMILARITIES, where, k + "similarity", s.similarity,
                f"choose one of {tuple(SIMILARITIES)}")

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
            form, see the constructor) and a dict of detached tensors: ``collapse_std``
            (0-dim: std of l2-normalised z, mean over channels; healthy near 1/sqrt(d)),
            ``embedding`` (that z, ``(B, d)``) and ``features`` (``(B, c)``: the backbone
            output for x1, detached, for an online probe).

        Raises:
            ValueError: not exactly two views.
        """
        if len(views) != 2:
            raise ValueError(f"SimSiam takes exactly 2 views, got {len(views)}")
        out = self.forward_views(views[0], views[1])
        loss = siamese_loss(out.p1, out.p2, out.z1, out.z2, self.similarity, self.symmetric)
        return loss, step_metrics(out.z1, out.h1)

    def param_groups(self) -> list[dict]:
        """Optimizer groups: ``encoder`` (backbone + projector) and ``predictor``, the
        latter with ``fixed_lr`` when ``fix_pred_lr`` (it keeps the peak lr, Table 1c).

        Frozen parameters (the projector's last bias, a fixed predictor) are left out, and
        so is a group with nothing to train.
        """
        return nonempty(param_group("encoder", (self.backbone, self.projector)),
                        param_group("predictor", (self.predictor,), fixed_lr=self.fix_pred_lr))

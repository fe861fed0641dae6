"""BYOL: an online network with a predictor regresses an EMA target network's projections.

Source: SIMSIAM.md section 6 (BYOL row); Grill et al. 2020, "Bootstrap Your Own Latent",
section 3.1 (eq. 2: the loss 2 - 2 cos, symmetrised over the two views) and section 3.3
(projector and predictor: Linear 4096, BN, ReLU, Linear 256; tau from 0.996 to 1 on a
cosine schedule) and deepmind-research ``byol`` (``utils/networks.py``: the hidden Linear
has a bias, the output Linear none; ``utils/optimizers.py``: LARS with eta 1e-3, biases
and BN parameters neither decayed nor adapted; ``configs/byol.py``: lr 0.2 x batch/256,
weight decay 1.5e-6, 10 warm-up epochs, for the 1,000-epoch run SIMSIAM.md quotes).

The online network is backbone + projector + predictor; the target network is a copy of
backbone + projector taken at construction, never trained, moved after every optimizer
step by ``xi <- tau xi + (1 - tau) theta`` (:meth:`BYOL.on_step_end`).
"""

from __future__ import annotations

import torch
from torch import nn

from simsiam.errors import require
from simsiam.methods.base import Method, RunShape, Traits, decay_groups, step_metrics
from simsiam.methods.contrastive import byol_loss, check_two_views
from simsiam.methods.momentum import byol_tau, ema_update, momentum_copy
from simsiam.methods.settings.byol import CARD, BYOLConfig
from simsiam.models.heads import MLPHead


class BYOL(Method):
    """The BYOL model.

    Args:
        backbone: images ``(B, 3, H, W)`` -> features ``(B, feature_dim)``.
        feature_dim: c, the backbone's output width.
        dim: projection width (256).
        hidden_dim: hidden width of projector and predictor (4096).
        base_tau: the target momentum at step 0 (0.996); it rises to 1 by :func:`byol_tau`.

    The projector is Linear(c, hidden) BN ReLU Linear(hidden, dim, bias=False) and the
    predictor Linear(dim, hidden) BN ReLU Linear(hidden, dim, bias=False), as BYOL's
    ``MLP`` (:class:`MLPHead` with ``out_bias=False``).

    Attributes:
        target_backbone, target_projector: the target network (``requires_grad=False``).

    Raises:
        ValueError: base_tau outside [0, 1] or a non-positive width.
    """

    card = CARD
    name = CARD.name
    Settings = BYOLConfig
    traits = Traits(negatives=False, momentum_encoder=True, queue=False)
    outside_backbone = ("target_backbone.", "target_projector.")  # besides its heads

    def __init__(self, backbone: nn.Module, feature_dim: int, dim: int = 256,
                 hidden_dim: int = 4096, base_tau: float = 0.996) -> None:
        super().__init__()
        if not 0.0 <= base_tau <= 1.0:
            raise ValueError(f"BYOL needs base_tau in [0, 1], got {base_tau}")
        self.backbone = backbone
        self.projector = MLPHead([feature_dim, hidden_dim, dim], out_bias=False)
        self.predictor = MLPHead([dim, hidden_dim, dim], out_bias=False)
        self.target_backbone = momentum_copy(self.backbone)
        self.target_projector = momentum_copy(self.projector)
        self.dim = dim
        self.base_tau = base_tau
        self.tau = base_tau  # the momentum of the last target update

    @classmethod
    def from_config(cls, settings: BYOLConfig, backbone: nn.Module, feature_dim: int,
                    image_size: int = 224, steps_per_epoch: int = 0) -> BYOL:
        """BYOL from ``model.byol`` (the view size plays no part)."""
        return cls(backbone, feature_dim, dim=settings.dim, hidden_dim=settings.hidden_dim,
                   base_tau=settings.base_tau)

    @classmethod
    def check(cls, settings: BYOLConfig, run: RunShape, where: str) -> None:
        """Positive widths, ``base_tau`` in [0, 1]."""
        s = settings
        for key in ("dim", "hidden_dim"):
            require(getattr(s, key) > 0, where, f"model.byol.{key}", getattr(s, key),
                    "use a positive width")
        require(0 <= s.base_tau <= 1, where, "model.byol.base_tau", s.base_tau,
                "use a value in [0, 1] such as 0.996")

    @torch.no_grad()
    def target(self, x: torch.Tensor) -> torch.Tensor:
        """The target network's projection of ``x``, ``(B, dim)``, no graph."""
        return self.target_projector(self.target_backbone(x))

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss and metrics for ``views = [x1, x2]``, each ``(B, 3, H, W)`` float.

        Returns:
            ``(loss, metrics)``: the float32 scalar ``byol_loss(p1, z2') + byol_loss(p2,
            z1')`` (BYOL eq. 2, its L + L~; range [0, 8]) with z' the target projections,
            and detached ``collapse_std`` (0-dim, of the online projection z1),
            ``embedding`` (that z, ``(B, d)``) and ``features`` (``(B, c)``, online backbone
            output of x1).

        Raises:
            ValueError: not exactly two views.
        """
        check_two_views("BYOL", views)
        h1 = self.backbone(views[0])
        z1 = self.projector(h1)
        z2 = self.projector(self.backbone(views[1]))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        t1, t2 = self.target(views[0]), self.target(views[1])
        loss = byol_loss(p1, t2) + byol_loss(p2, t1)
        return loss, step_metrics(z1, h1)

    def param_groups(self) -> list[dict]:
        """Groups ``encoder`` (backbone + projector) and ``predictor``, each split into its
        weights and its biases and BN parameters (``*_bias_bn``: no weight decay, no LARS
        adaptation; BYOL's ``exclude_bias_and_norm``); no target parameter.

        All follow the schedule (BYOL decays every lr; SimSiam's fixed predictor lr is
        SimSiam's rule, not BYOL's).
        """
        return (decay_groups("encoder", (self.backbone, self.projector))
                + decay_groups("predictor", (self.predictor,)))

    @torch.no_grad()
    def on_step_end(self, step: int, total_steps: int) -> None:
        """EMA of the target network with ``tau = byol_tau(step, total_steps - 1, base_tau)``.

        ``step`` is the 0-based index of the step just taken (0 .. total_steps - 1), so the
        first update uses ``base_tau`` exactly and the last one 1.0.
        """
        self.tau = byol_tau(step, max(total_steps - 1, 1), self.base_tau)
        ema_update(self.target_backbone, self.backbone, self.tau)
        ema_update(self.target_projector, self.projector, self.tau)

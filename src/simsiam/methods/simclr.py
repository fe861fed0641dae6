"""SimCLR: one encoder, a 2-layer projection MLP, NT-Xent over the 2N views of a batch.

Source: SIMSIAM.md section 6 (SimCLR row); Chen et al. 2020, "A Simple Framework for
Contrastive Learning of Visual Representations", section 2.1 and Appendix B.9 (CIFAR:
temperature 0.5, colour strength 0.5, no blur); google-research/simclr (the head: BN on
every layer, the output BN without shift; LARS with lr 0.3 x batch/256, weight decay
1e-6, 10 warm-up epochs on ImageNet; on CIFAR lr 1.0 x batch/256, weight decay 1e-4, its
README's CIFAR-10 command; biases and BN parameters neither decayed nor adapted). The two
views pass through the encoder in two separate forward passes,
as in :class:`~simsiam.methods.simsiam.SimSiam`. Under data parallelism every process's
anchors take the views of all processes as candidates (gathered with gradient), so the
mean over processes is the loss of the global batch.
"""

from __future__ import annotations

import torch
from torch import nn

from simsiam.distributed.ops import gather_with_grad, rank, world_size
from simsiam.errors import require
from simsiam.methods.base import (
    Method,
    RunShape,
    Traits,
    decay_groups,
    step_metrics,
)
from simsiam.methods.card import small_images
from simsiam.methods.contrastive import check_two_views, nt_xent
from simsiam.methods.settings.simclr import CARD, SimCLRConfig
from simsiam.models.heads import MLPHead


class SimCLR(Method):
    """The SimCLR model.

    Args:
        backbone: images ``(B, 3, H, W)`` -> features ``(B, feature_dim)``.
        feature_dim: c, the backbone's output width.
        dim: output width of the projector (128 in SimCLR).
        hidden_dim: projector hidden width (default c, as in SimCLR).
        temperature: NT-Xent temperature (0.5 on CIFAR, 0.1 at large batch on ImageNet).

    The projector is SimCLR's (google-research/simclr ``model.py``, ``use_bn`` on every
    layer): Linear(c, hidden, bias=False) BN ReLU Linear(hidden, dim, bias=False) BN with a
    gain and no shift (TensorFlow's ``center=False``); :class:`MLPHead` with
    ``out_bn="scale"``. Its output leaves a BN, so every dimension of z has zero batch
    mean: the collapse guard watches its effective rank (``collapse_measure = "rank"``).

    Raises:
        ValueError: temperature <= 0 or a non-positive width.
    """

    card = CARD
    name = CARD.name
    Settings = SimCLRConfig
    traits = Traits(negatives=True, momentum_encoder=False, queue=False)
    collapse_measure = "rank"

    def __init__(self, backbone: nn.Module, feature_dim: int, dim: int = 128,
                 hidden_dim: int | None = None, temperature: float = 0.5) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"SimCLR needs a temperature > 0, got {temperature}")
        self.backbone = backbone
        self.projector = MLPHead([feature_dim, hidden_dim or feature_dim, dim],
                                 hidden_bias=False, out_bias=False, out_bn="scale")
        self.dim = dim
        self.temperature = temperature

    @classmethod
    def from_config(cls, settings: SimCLRConfig, backbone: nn.Module, feature_dim: int,
                    image_size: int = 224, steps_per_epoch: int = 0) -> SimCLR:
        """SimCLR from ``model.simclr``; a null temperature takes 0.5 for views of at most
        64 px, else 0.1."""
        t = settings.temperature
        if t is None:
            t = 0.5 if small_images(image_size) else 0.1
        return cls(backbone, feature_dim, dim=settings.dim, hidden_dim=settings.hidden_dim,
                   temperature=t)

    @classmethod
    def check(cls, settings: SimCLRConfig, run: RunShape, where: str) -> None:
        """Positive widths and temperature."""
        s = settings
        require(s.dim > 0, where, "model.simclr.dim", s.dim, "use a positive width such as 128")
        require(s.hidden_dim is None or s.hidden_dim > 0, where, "model.simclr.hidden_dim",
                s.hidden_dim, "use a positive width or null (the backbone's width)")
        require(s.temperature is None or s.temperature > 0, where, "model.simclr.temperature",
                s.temperature, "use a positive temperature or null")

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss and metrics for ``views = [x1, x2]``, each ``(B, 3, H, W)`` float.

        Returns:
            ``(loss, metrics)``: the float32 NT-Xent scalar and detached ``collapse_std``
            (0-dim, of the projector output z1), ``embedding`` (that z, ``(B, d)``) and
            ``features`` (``(B, c)``, backbone output of x1).

        Raises:
            ValueError: not exactly two views.
        """
        check_two_views("SimCLR", views)
        h1 = self.backbone(views[0])
        z1 = self.projector(h1)
        z2 = self.projector(self.backbone(views[1]))
        if world_size() > 1:  # negatives from the whole global batch, gradient through all
            loss = nt_xent(z1, z2, self.temperature,
                           gathered=(gather_with_grad(z1), gather_with_grad(z2)),
                           offset=rank() * z1.shape[0])
        else:
            loss = nt_xent(z1, z2, self.temperature)
        return loss, step_metrics(z1, h1)

    def param_groups(self) -> list[dict]:
        """``encoder`` (backbone + projector weights) and ``encoder_bias_bn`` (their biases
        and BN parameters: no weight decay and, under LARS, no adaptation; SimCLR's
        ``exclude_from_weight_decay``), trainable parameters only."""
        return decay_groups("encoder", (self,))

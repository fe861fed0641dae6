"""SimCLR: one encoder, a 2-layer projection MLP, NT-Xent over the 2N views of a batch.

Source: SIMSIAM.md section 6 (SimCLR row); Chen et al. 2020, "A Simple Framework for
Contrastive Learning of Visual Representations", section 2.1 and Appendix B.9 (CIFAR:
temperature 0.5). The two views pass through the encoder in two separate forward passes,
as in :class:`~simsiam.methods.simsiam.SimSiam`. Under data parallelism every process's
anchors take the views of all processes as candidates (gathered with gradient), so the
mean over processes is the loss of the global batch.
"""

from __future__ import annotations

import torch
from torch import nn

from simsiam.distributed.ops import gather_with_grad, rank, world_size
from simsiam.eval.collapse import collapse_std
from simsiam.methods.contrastive import check_two_views, nt_xent
from simsiam.models.heads import ProjectionHead


class SimCLR(nn.Module):
    """The SimCLR model.

    Args:
        backbone: images ``(B, 3, H, W)`` -> features ``(B, feature_dim)``.
        feature_dim: c, the backbone's output width.
        dim: output width of the projector (128 in SimCLR).
        hidden_dim: projector hidden width (default c, as in SimCLR).
        temperature: NT-Xent temperature (0.5 on CIFAR, 0.1 at large batch on ImageNet).

    The projector is Linear(c, hidden, bias=False) BN ReLU Linear(hidden, dim) with bias
    (:class:`ProjectionHead` with ``num_layers=2, out_bn=False``).

    Raises:
        ValueError: temperature <= 0 or a non-positive width.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, dim: int = 128,
                 hidden_dim: int | None = None, temperature: float = 0.5) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"SimCLR needs a temperature > 0, got {temperature}")
        self.backbone = backbone
        self.projector = ProjectionHead(feature_dim, hidden_dim or feature_dim, dim,
                                        num_layers=2, hidden_bn=True, out_bn=False)
        self.dim = dim
        self.temperature = temperature

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss and metrics for ``views = [x1, x2]``, each ``(B, 3, H, W)`` float.

        Returns:
            ``(loss, metrics)``: the float32 NT-Xent scalar and detached ``collapse_std``
            (0-dim, of the projector output z1) and ``features`` (``(B, c)``, backbone
            output of x1).

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
        return loss, {"collapse_std": collapse_std(z1), "features": h1.detach()}

    def param_groups(self) -> list[dict]:
        """One group, ``encoder`` (backbone + projector), trainable parameters only."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"name": "encoder", "params": params}]

    def on_step_end(self, step: int, total_steps: int) -> None:
        """Nothing to update after a step."""

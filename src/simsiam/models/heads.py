"""MLP heads: the projection MLP (projector) and the prediction MLP (predictor).

Source: SIMSIAM.md section 2 (official SimSiam builder) and Appendix D of the paper.

- Projector, ``num_layers`` Linear layers: every hidden Linear is bias-free and followed
  by BN and ReLU; the output Linear is followed by an affine-free BN. The output Linear's
  bias is kept but frozen, as in the official code (the affine-free BN cancels it), so the
  trainable count of the 3-layer 2048-d projector on ResNet-50 is 12,591,104 plus 2,048
  frozen.
- Predictor, bottleneck d -> h -> d (h = d/4 by default): Linear(bias=False) BN ReLU, then
  Linear with bias and no BN, no ReLU.
"""

from __future__ import annotations

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """Projection MLP g: backbone features (B, in_dim) -> z (B, out_dim), float.

    Args:
        in_dim: backbone feature width c (512 for ResNet-18, 2048 for ResNet-50).
        hidden_dim: width of the hidden layers (c on ImageNet, 2048 on CIFAR).
        out_dim: d, the output width (2048 in the paper).
        num_layers: 3 on ImageNet, 2 on CIFAR; 1 gives Linear + affine-free BN.

    Raises:
        ValueError: ``num_layers`` < 1 or a non-positive width.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 3) -> None:
        super().__init__()
        if num_layers < 1 or min(in_dim, hidden_dim, out_dim) < 1:
            raise ValueError(f"ProjectionHead needs num_layers >= 1 and positive widths, got "
                             f"in={in_dim} hidden={hidden_dim} out={out_dim} layers={num_layers}")
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(num_layers - 1):
            layers += [nn.Linear(width, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim),
                       nn.ReLU(inplace=True)]
            width = hidden_dim
        last = nn.Linear(width, out_dim)
        last.bias.requires_grad = False  # cancelled by the affine-free BN (official code)
        layers += [last, nn.BatchNorm1d(out_dim, affine=False)]
        self.layers = nn.Sequential(*layers)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class PredictionHead(nn.Module):
    """Prediction MLP h: z (B, dim) -> p (B, dim), a bottleneck with BN+ReLU in the middle.

    Args:
        dim: d, input and output width.
        hidden_dim: bottleneck width (d/4 = 512 in the paper).

    Raises:
        ValueError: a non-positive width.
    """

    def __init__(self, dim: int = 2048, hidden_dim: int = 512) -> None:
        super().__init__()
        if min(dim, hidden_dim) < 1:
            raise ValueError(f"PredictionHead needs positive widths, got dim={dim} "
                             f"hidden={hidden_dim}")
        self.layers = nn.Sequential(
            nn.Linear(dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, dim),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z)

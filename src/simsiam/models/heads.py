"""MLP heads: the projection MLP (projector) and the prediction MLP (predictor).

Source: SIMSIAM.md section 2 (official SimSiam builder) and Appendix D of the paper.

- Projector, ``num_layers`` Linear layers: every hidden Linear is bias-free and followed
  by BN and ReLU; the output Linear is followed by an affine-free BN. The output Linear's
  bias is kept but frozen, as in the official code (the affine-free BN cancels it), so the
  trainable count of the 3-layer 2048-d projector on ResNet-50 is 12,591,104 plus 2,048
  frozen.
- Predictor, bottleneck d -> h -> d (h = d/4 by default): Linear(bias=False) BN ReLU, then
  Linear with bias and no BN, no ReLU.
- Paper Table 3 (SIMSIAM.md section 5) switches BN on or off at each of the four places:
  projector hidden / projector output / predictor hidden / predictor output (default
  on / on / on / off).
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
        hidden_bn: BN after each hidden Linear (paper Table 3, "proj. MLP's hidden").
        out_bn: the affine-free BN after the output Linear (Table 3, "proj. MLP's out").

    A Linear followed by BN has no bias (BN's shift replaces it); without BN the Linear
    has a trainable bias. With ``out_bn`` the output bias is kept but frozen, as in the
    official code, so the default parameter layout matches it exactly.

    Raises:
        ValueError: ``num_layers`` < 1 or a non-positive width.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 3,
                 hidden_bn: bool = True, out_bn: bool = True) -> None:
        super().__init__()
        if num_layers < 1 or min(in_dim, hidden_dim, out_dim) < 1:
            raise ValueError(f"ProjectionHead needs num_layers >= 1 and positive widths, got "
                             f"in={in_dim} hidden={hidden_dim} out={out_dim} layers={num_layers}")
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(width, hidden_dim, bias=not hidden_bn))
            if hidden_bn:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.ReLU(inplace=True))
            width = hidden_dim
        last = nn.Linear(width, out_dim)
        layers.append(last)
        if out_bn:
            last.bias.requires_grad = False  # cancelled by the affine-free BN (official code)
            layers.append(nn.BatchNorm1d(out_dim, affine=False))
        self.layers = nn.Sequential(*layers)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class PredictionHead(nn.Module):
    """Prediction MLP h: z (B, dim) -> p (B, dim), a bottleneck with BN+ReLU in the middle.

    Args:
        dim: d, input and output width.
        hidden_dim: bottleneck width (d/4 = 512 in the paper).
        hidden_bn: BN after the first Linear (paper Table 3, "pred. MLP's hidden"; on).
        out_bn: BN (affine) after the output Linear (Table 3, "pred. MLP's out"; off by
            default: with it on as well, training is unstable).

    Raises:
        ValueError: a non-positive width.
    """

    def __init__(self, dim: int = 2048, hidden_dim: int = 512, hidden_bn: bool = True,
                 out_bn: bool = False) -> None:
        super().__init__()
        if min(dim, hidden_dim) < 1:
            raise ValueError(f"PredictionHead needs positive widths, got dim={dim} "
                             f"hidden={hidden_dim}")
        layers: list[nn.Module] = [nn.Linear(dim, hidden_dim, bias=not hidden_bn)]
        if hidden_bn:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers += [nn.ReLU(inplace=True), nn.Linear(hidden_dim, dim, bias=not out_bn)]
        if out_bn:
            layers.append(nn.BatchNorm1d(dim))
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z)

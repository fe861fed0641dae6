"""MLP heads: the projection MLP (projector) and the prediction MLP (predictor).

Source: SIMSIAM.md section 2 (official SimSiam builder) and Appendix D of the paper for
SimSiam's :class:`ProjectionHead` and :class:`PredictionHead`; the comparison systems'
heads are :class:`MLPHead`, layer for layer as in each author's code (its docstring).

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


OUT_BN = ("none", "affine", "scale")


class MLPHead(nn.Module):
    """A comparison system's MLP head, layer for layer as its authors built it.

    ``widths = [in, hidden..., out]``: every hidden Linear is followed by BatchNorm (when
    ``hidden_bn``) and ReLU; the output Linear by nothing, or by a BatchNorm (``out_bn``):
    ``"affine"`` (gain and shift) or ``"scale"`` (gain only: the shift is kept at 0 and
    frozen, TensorFlow's ``BatchNormalization(center=False)``, SimCLR's output layer).

    The heads this builds (ResNet-50 / ResNet-18 widths c = 2048 / 512):

    - SimCLR (google-research/simclr ``model.py``: a Dense before BN has no bias; the
      output BN has ``center=False``): ``[c, c, 128]``, ``hidden_bias=False``,
      ``out_bias=False``, ``out_bn="scale"``.
    - MoCo v2 (facebookresearch/moco ``builder.py``: hidden width = the backbone's,
      biases, no BN): ``[c, c, 128]``, ``hidden_bn=False``.
    - BYOL projector and predictor (deepmind-research ``byol/utils/networks.py``: Linear
      with bias, BN, ReLU, Linear without bias): ``[c, 4096, 256]`` and ``[256, 4096,
      256]``, ``hidden_bias=True``, ``out_bias=False``.
    - SwAV (facebookresearch/swav ``src/resnet50.py``: PyTorch's default biases):
      ``[c, 2048, 128]``, ``hidden_bias=True``, ``out_bias=True``.

    Input ``(B, widths[0])`` float, output ``(B, widths[-1])``.

    Raises:
        ValueError: fewer than two widths, a non-positive width, or an ``out_bn`` other
            than none / affine / scale.
    """

    def __init__(self, widths: list[int], hidden_bias: bool = True, hidden_bn: bool = True,
                 out_bias: bool = True, out_bn: str = "none") -> None:
        super().__init__()
        if len(widths) < 2 or min(widths) < 1 or out_bn not in OUT_BN:
            raise ValueError(f"MLPHead needs at least two positive widths and out_bn in "
                             f"{OUT_BN}, got widths={widths} out_bn={out_bn!r}")
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-2], widths[1:-1], strict=True):
            layers.append(nn.Linear(a, b, bias=hidden_bias))
            if hidden_bn:
                layers.append(nn.BatchNorm1d(b))
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Linear(widths[-2], widths[-1], bias=out_bias))
        if out_bn != "none":
            bn = nn.BatchNorm1d(widths[-1])
            if out_bn == "scale":
                bn.bias.requires_grad = False  # the shift stays 0 (center=False)
            layers.append(bn)
        self.layers = nn.Sequential(*layers)
        self.out_dim = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

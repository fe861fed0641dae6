"""SimSiam's section ``model.simsiam`` and card (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass

from simsiam.methods.card import MethodCard


@dataclass
class SimSiamConfig:
    """``model.simsiam``: the heads and the paper's ablation switches.

    Defaults are the ImageNet builder (SIMSIAM.md section 2); ``configs/cifar10.yaml``
    sets the CIFAR heads of Appendix D. The switches are the paper's ablations (section
    5); their defaults are the paper's method.
    """

    proj_layers: int = 3  # 3 on ImageNet, 2 on CIFAR
    proj_hidden_dim: int | None = None  # None: the backbone's feature width c
    dim: int = 2048  # d, the projector's output width
    pred_hidden_dim: int | None = None  # None: d / 4
    stop_gradient: bool = True  # Fig. 2: off collapses
    predictor: str = "mlp"  # Table 1: "mlp" | "none" (p = z, collapses) | "fixed" (random)
    proj_hidden_bn: bool = True  # Table 3: BN in the projector's hidden layers
    proj_out_bn: bool = True  # Table 3: affine-free BN on the projector's output
    pred_hidden_bn: bool = True  # Table 3: BN in the predictor's hidden layer
    pred_out_bn: bool = False  # Table 3: BN on the predictor's output (unstable with all on)
    similarity: str = "cosine"  # section 4.5: "cosine" | "cross_entropy" (softmax over d)
    symmetric: bool = True  # section 4.6: False uses only D(p1, stopgrad(z2))
    fix_pred_lr: bool = True  # Table 1c: the predictor keeps the initial (peak) lr


CARD = MethodCard(name="simsiam", settings=SimSiamConfig, view_recipe="simsiam")

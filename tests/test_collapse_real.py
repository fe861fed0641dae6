"""The paper's collapse experiments (Figure 2, Table 1a/1b) on real CIFAR-10 images.

Setting (stated, as the issue asks): 5,000 real CIFAR-10 training images, 16 px views of
the SimSiam recipe, ImageNet-stem ResNet-18, the CIFAR heads (d = 2048), batch 64, SGD
lr 0.2 momentum 0.9 wd 5e-4 constant, float32, seed 0, STEPS = 80 steps (measured: at
step 60 the loss was -0.994 and the metric 0.095/sqrt(d) without stop-gradient, -0.992
and 0.094 without predictor; 0.82 and 0.78 with stop-gradient and with a fixed predictor).

The projector's output BN is switched off here (paper Table 3b, "hidden only", 67.4%).
With the default affine-free BN on z every channel has zero mean over the batch, so the
l2-normalised z of a batch cannot all point the same way: the collapse metric is then
bounded below by about 2/sqrt(B) x 1/sqrt(d) (one outlier per batch), 0.25/sqrt(d) at
B = 64, and the issue's 0.1/sqrt(d) threshold needs B >= 512 (REPRODUCTION.md).
"""

from __future__ import annotations

import pytest
import torch

from simsiam.augment.batched import BatchedSimSiamAugment
from simsiam.config import ModelConfig, load_config
from simsiam.data.dataset import load_splits
from simsiam.eval.collapse import healthy_std
from simsiam.methods import SimSiamConfig, build_method

STEPS = 80
BATCH = 64
HEADS = {"proj_layers": 2,
         "proj_hidden_dim": 2048, "dim": 2048, "pred_hidden_dim": 512, "proj_out_bn": False}


@pytest.fixture(scope="module")
def images(cifar_dir):
    cfg = load_config("demo-cpu", {"data.source": str(cifar_dir), "data.per_class": 500,
                                   "data.test_per_class": 1, "data.image_size": 16})
    train, _ = load_splits(cfg.data, 0, progress=False)
    return torch.from_numpy(train.images.copy()).permute(0, 3, 1, 2).contiguous(), cfg


def _run(images, **model_over) -> list[tuple[float, float]]:
    """(loss, collapse std x sqrt(d)) after each step."""
    imgs, cfg = images
    torch.manual_seed(0)
    model = build_method("simsiam", ModelConfig(backbone="resnet18", stem="imagenet",
                                                simsiam=SimSiamConfig(**(HEADS | model_over))))
    opt = torch.optim.SGD(model.param_groups(), lr=0.2, momentum=0.9, weight_decay=5e-4)
    aug = BatchedSimSiamAugment(cfg.augment, 16)
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(STEPS):
        x = imgs[torch.randint(0, len(imgs), (BATCH,), generator=g)]
        loss, metrics = model([aug(x, g), aug(x, g)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        out.append((loss.item(), metrics["collapse_std"].item() / healthy_std(model.dim)))
    return out


@pytest.mark.slow
def test_without_stop_gradient_it_collapses_and_with_it_it_does_not(images):
    without = _run(images, stop_gradient=False)
    loss, ratio = without[-1]
    assert loss < -0.99 and ratio < 0.1, without[-5:]
    with_sg = _run(images)
    assert min(r for _, r in with_sg) > 0.5, with_sg[-5:]
    assert with_sg[-1][0] > -0.95  # no trivial solution: the loss stays well above -1


@pytest.mark.slow
def test_no_predictor_collapses_and_a_fixed_random_predictor_does_not(images):
    none = _run(images, predictor="none")
    loss, ratio = none[-1]
    assert loss < -0.99 and ratio < 0.1, none[-5:]
    fixed = _run(images, predictor="fixed")
    assert min(r for _, r in fixed) > 0.5, fixed[-5:]

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
from simsiam.eval.collapse import CollapseGuard, effective_rank, healthy_std, rank_reference
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


def _run(images, steps: int = STEPS, **model_over) -> list[tuple[float, float, float]]:
    """(loss, collapse std x sqrt(d), effective rank of z / isotropic) after each step."""
    imgs, cfg = images
    torch.manual_seed(0)
    model = build_method("simsiam", ModelConfig(backbone="resnet18", stem="imagenet",
                                                simsiam=SimSiamConfig(**(HEADS | model_over))))
    opt = torch.optim.SGD(model.param_groups(), lr=0.2, momentum=0.9, weight_decay=5e-4)
    aug = BatchedSimSiamAugment(cfg.augment, 16)
    g = torch.Generator().manual_seed(0)
    out = []
    iso = rank_reference(BATCH, model.dim)
    for _ in range(steps):
        x = imgs[torch.randint(0, len(imgs), (BATCH,), generator=g)]
        loss, metrics = model([aug(x, g), aug(x, g)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        out.append((loss.item(), metrics["collapse_std"].item() / healthy_std(model.dim),
                    effective_rank(metrics["embedding"]).item() / iso))
    return out


@pytest.mark.slow
def test_without_stop_gradient_it_collapses_and_with_it_it_does_not(images):
    without = _run(images, stop_gradient=False)
    loss, ratio, _ = without[-1]
    assert loss < -0.99 and ratio < 0.1, without[-5:]
    with_sg = _run(images)
    assert min(r for _, r, _ in with_sg) > 0.5, with_sg[-5:]
    assert with_sg[-1][0] > -0.95  # no trivial solution: the loss stays well above -1


@pytest.mark.slow
def test_no_predictor_collapses_and_a_fixed_random_predictor_does_not(images):
    none = _run(images, predictor="none")
    loss, ratio, _ = none[-1]
    assert loss < -0.99 and ratio < 0.1, none[-5:]
    fixed = _run(images, predictor="fixed")
    assert min(r for _, r, _ in fixed) > 0.5, fixed[-5:]


# The default head (affine-free BN on z), where the std is blind (module docstring). Same
# setting otherwise. Measured over 150 steps (effective rank of z / an isotropic batch's,
# every 5 steps): default 0.83 -> 0.37-0.40 from step 110 on; no stop-gradient below 0.1 from
# step 30, 0.03-0.05 from step 45; no predictor below 0.1 from step 60, 0.03-0.04 from step
# 95; a fixed random predictor (it does not converge, Table 1b) 0.15 at step 150. Every step
# of the 120 below (measured): the rank guard fires at step 53 without stop-gradient and 83
# without predictor; the default recipe's rank never falls under 0.357; the std of
# normalised z never under 0.32/sqrt(d) (no stop-gradient) and 0.43/sqrt(d) (no predictor).
GUARD_STEPS, GUARD_PATIENCE = 120, 20


def _first_alarm(trace: list[tuple[float, float, float]], measure: str) -> int | None:
    """The step at which a guard with eval's default threshold and GUARD_PATIENCE fires."""
    from simsiam.config import EvalConfig

    e = EvalConfig()
    ratio = e.rank_ratio if measure == "rank" else e.collapse_ratio
    guard = CollapseGuard(2048, ratio, GUARD_PATIENCE, measure, 1.0)
    for step, (_, std, rank) in enumerate(trace, start=1):
        if guard.update(step, rank if measure == "rank" else std / 2048 ** 0.5):
            return step
    return None


@pytest.mark.slow
def test_the_rank_guard_sees_collapse_with_the_default_head(images):
    default = {"proj_out_bn": True}
    no_sg = _run(images, GUARD_STEPS, stop_gradient=False, **default)
    no_pred = _run(images, GUARD_STEPS, predictor="none", **default)
    healthy = _run(images, GUARD_STEPS, **default)
    for trace in (no_sg, no_pred):
        step = _first_alarm(trace, "rank")
        assert step is not None and step <= GUARD_STEPS, trace[-5:]
        assert _first_alarm(trace, "std") is None  # the paper's metric misses it here
        # with BN on z the metric cannot fall below about 2/sqrt(B) (module docstring)
        assert min(s for _, s, _ in trace) > 2 / BATCH ** 0.5
    assert _first_alarm(healthy, "rank") is None
    assert min(r for _, _, r in healthy) > 0.25, healthy[-5:]

"""The paper's ablation switches (SIMSIAM.md section 5): each changes exactly the module it
names on the built model, the losses follow their formulas, and the defaults stay the
official architecture."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from simsiam.config import ModelConfig, auto_warmup_epochs, load_config
from simsiam.methods import SimSiamConfig, build_method, cross_entropy_similarity, siamese_loss
from simsiam.models.backbones import count_parameters

SMALL = {"backbone": "resnet18", "dim": 64, "proj_hidden_dim": 96, "proj_layers": 2}


def _layout(module: nn.Module) -> list[tuple[str, str, tuple, bool]]:
    """(name, type, weight shapes, trainable) of every leaf module, in order."""
    out = []
    for name, m in module.named_modules():
        if list(m.children()):
            continue
        params = tuple((n, tuple(p.shape), p.requires_grad) for n, p in m.named_parameters())
        out.append((name, type(m).__name__, params, getattr(m, "affine", None)))
    return out


def _parts(model) -> dict[str, list]:
    return {k: _layout(getattr(model, k)) for k in ("backbone", "projector", "predictor")}


def _model(**kw) -> ModelConfig:
    """The model section: backbone keys at the top, the rest in model.simsiam."""
    shared = {k: kw.pop(k) for k in ("backbone", "stem", "zero_init_residual") if k in kw}
    return ModelConfig(**shared, simsiam=SimSiamConfig(**kw))


def _build(**over):
    torch.manual_seed(0)
    return build_method("simsiam", _model(**(SMALL | over)))


def test_defaults_are_the_official_builder():
    model = build_method("simsiam", ModelConfig())  # ResNet-50, 3-layer projector, d = 2048
    assert count_parameters(model) == 38_199_360
    assert count_parameters(model.projector, trainable_only=False) == 12_591_104 + 2_048
    assert count_parameters(model.predictor) == 2_100_224
    kinds = [type(m).__name__ for m in model.predictor.layers]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert model.stop_gradient and model.symmetric and model.similarity == "cosine"


@pytest.mark.parametrize("switch,changed", [
    ({"proj_hidden_bn": False}, "projector"),
    ({"proj_out_bn": False}, "projector"),
    ({"pred_hidden_bn": False}, "predictor"),
    ({"pred_out_bn": True}, "predictor"),
    ({"predictor": "none"}, "predictor"),
    ({"predictor": "fixed"}, "predictor"),
    ({"stop_gradient": False}, None),
    ({"similarity": "cross_entropy"}, None),
    ({"symmetric": False}, None),
])
def test_each_switch_changes_exactly_the_module_it_names(switch, changed):
    base, other = _parts(_build()), _parts(_build(**switch))
    for part in base:
        assert (base[part] != other[part]) == (part == changed), part


def test_bn_switches_remove_the_named_bn_and_give_its_linear_a_bias():
    proj = _build(proj_hidden_bn=False).projector.layers
    assert [type(m).__name__ for m in proj] == ["Linear", "ReLU", "Linear", "BatchNorm1d"]
    assert proj[0].bias is not None and proj[0].bias.requires_grad
    proj = _build(proj_out_bn=False).projector.layers
    assert [type(m).__name__ for m in proj] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert proj[-1].bias.requires_grad  # no BN to cancel it: trained
    pred = _build(pred_hidden_bn=False).predictor.layers
    assert [type(m).__name__ for m in pred] == ["Linear", "ReLU", "Linear"]
    assert pred[0].bias is not None
    pred = _build(pred_out_bn=True).predictor.layers
    assert [type(m).__name__ for m in pred] == ["Linear", "BatchNorm1d", "ReLU", "Linear",
                                                "BatchNorm1d"]
    assert pred[-2].bias is None and pred[-1].affine
    none = _build(proj_hidden_bn=False, proj_out_bn=False, pred_hidden_bn=False)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in
                   list(none.projector.modules()) + list(none.predictor.modules()))


def test_predictor_none_and_fixed():
    model = _build(predictor="none")
    assert isinstance(model.predictor, nn.Identity)
    assert [g["name"] for g in model.param_groups()] == ["encoder"]
    x = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]
    out = model.forward_views(*x)
    assert torch.allclose(out.p1, out.z1)  # p = z (z1 is its detached copy)
    fixed = _build(predictor="fixed")
    assert [g["name"] for g in fixed.param_groups()] == ["encoder"]
    assert not any(p.requires_grad for p in fixed.predictor.parameters())
    before = [p.clone() for p in fixed.predictor.parameters()]
    opt = torch.optim.SGD(fixed.param_groups(), lr=0.5)
    loss, _ = fixed(x)
    loss.backward()
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, fixed.predictor.parameters(), strict=True))
    assert all(p.grad is None for p in fixed.predictor.parameters())


def test_no_stop_gradient_lets_the_target_carry_a_graph():
    out = _build(stop_gradient=False).forward_views(torch.randn(4, 3, 32, 32),
                                                     torch.randn(4, 3, 32, 32))
    assert out.z1.grad_fn is not None and out.z2.grad_fn is not None


def test_cross_entropy_similarity_and_asymmetric_loss_against_formulas():
    g = torch.Generator().manual_seed(0)
    p1, p2, z1, z2 = (torch.randn(5, 7, generator=g) for _ in range(4))

    def ce(p, z):  # -sum_j softmax(z)_j log softmax(p)_j, mean over rows, written out
        tot = 0.0
        for i in range(p.shape[0]):
            lse = math.log(sum(math.exp(v) for v in p[i].tolist()))
            ez = [math.exp(v) for v in z[i].tolist()]
            tot -= sum(e / sum(ez) * (pv - lse) for e, pv in zip(ez, p[i].tolist(), strict=True))
        return tot / p.shape[0]

    assert cross_entropy_similarity(p1, z2).item() == pytest.approx(ce(p1, z2), abs=1e-5)
    sym = siamese_loss(p1, p2, z1, z2, "cross_entropy")
    assert sym.item() == pytest.approx(0.5 * ce(p1, z2) + 0.5 * ce(p2, z1), abs=1e-5)
    cos = torch.nn.functional.cosine_similarity
    asym = siamese_loss(p1, p2, z1, z2, "cosine", symmetric=False)
    assert asym.item() == pytest.approx(-cos(p1, z2).mean().item(), abs=1e-6)
    with pytest.raises(ValueError, match="similarity"):
        siamese_loss(p1, p2, z1, z2, "dot")


def test_asymmetric_loss_sends_no_gradient_through_the_second_prediction():
    model = _build(symmetric=False)
    x = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]
    out = model.forward_views(*x)
    loss = siamese_loss(out.p1, out.p2, out.z1, out.z2, symmetric=False)
    (g2,) = torch.autograd.grad(loss, out.p2, allow_unused=True, materialize_grads=True)
    assert torch.count_nonzero(g2) == 0


def test_warmup_rule_for_large_batches():
    assert auto_warmup_epochs(512) == 0 and auto_warmup_epochs(1024) == 10
    over = {"data.source": "x", "train.epochs": 100}
    assert load_config("cifar10", over | {"train.batch_size": 2048}).optim.warmup_epochs == 10
    assert load_config("cifar10", over | {"train.batch_size": 256}).optim.warmup_epochs == 0
    assert load_config("cifar10", over | {"train.batch_size": 2048,
                                          "optim.warmup_epochs": 3}).optim.warmup_epochs == 3


@pytest.mark.parametrize("key,value", [("model.simsiam.predictor", "linear"),
                                       ("model.simsiam.similarity", "dot")])
def test_bad_ablation_values_name_the_field(key, value):
    from simsiam.errors import ConfigError

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config("demo-cpu", {key: value})


def test_zero_init_residual_switch():
    official, tv = _build(), _build(zero_init_residual=False)
    assert torch.count_nonzero(official.backbone.layer1[0].bn2.weight) == 0
    assert torch.equal(tv.backbone.layer1[0].bn2.weight, torch.ones(64))
    assert _parts(official) == _parts(tv)  # the same modules, only the init differs

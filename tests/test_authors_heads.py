"""The comparison systems as their authors built them: each head's layer list at ResNet-18
and ResNet-50 widths (BN positions, biases, widths, exact trainable counts), MoCo's
shuffle BN (split-batch BN against k separate BN calls; shuffle then unshuffle), SwAV's
head run once on all crops, LARS against the LARC formula with each author's exclusions,
and the published optimizer settings a --method switch brings."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from simsiam.config import OptimConfig, load_config
from simsiam.methods import METHODS
from simsiam.models.splitbn import SplitBatchNorm2d, shuffle_batch, split_batchnorm
from simsiam.train.optim import build_optimizer


def layer_list(head: nn.Module) -> list[tuple]:
    """(kind, widths, bias / BN kind) per layer of a head's Sequential."""
    out = []
    for m in head.layers:
        if isinstance(m, nn.Linear):
            out.append(("Linear", m.in_features, m.out_features, m.bias is not None))
        elif isinstance(m, nn.BatchNorm1d):
            kind = "scale" if m.affine and not m.bias.requires_grad else \
                "affine" if m.affine else "plain"
            out.append(("BN", m.num_features, kind))
        else:
            out.append((type(m).__name__,))
    return out


def trainable(head: nn.Module) -> int:
    return sum(p.numel() for p in head.parameters() if p.requires_grad)


def built(name: str, c: int) -> nn.Module:
    cls = METHODS[name]
    return cls.from_config(cls.Settings(), nn.Identity(), c, 224, 10)


@pytest.mark.parametrize("c", [512, 2048])  # ResNet-18, ResNet-50
def test_simclr_projector_has_bn_on_every_layer_and_no_output_shift(c):
    head = built("simclr", c).projector
    assert layer_list(head) == [("Linear", c, c, False), ("BN", c, "affine"), ("ReLU",),
                                ("Linear", c, 128, False), ("BN", 128, "scale")]
    # c*c + 2c (BN) + c*128 + 128 (output BN gain; its shift frozen at 0)
    assert trainable(head) == {512: 328_832, 2048: 4_460_672}[c]
    assert torch.equal(head.layers[4].bias, torch.zeros(128))


@pytest.mark.parametrize("c", [512, 2048])
def test_mocov2_head_hidden_is_the_backbone_width(c):
    head = built("mocov2", c).head
    assert layer_list(head) == [("Linear", c, c, True), ("ReLU",), ("Linear", c, 128, True)]
    assert trainable(head) == {512: 328_320, 2048: 4_458_624}[c]  # c*c + c + 128c + 128


@pytest.mark.parametrize("c", [512, 2048])
def test_byol_heads_end_without_a_bias(c):
    m = built("byol", c)
    assert layer_list(m.projector) == [("Linear", c, 4096, True), ("BN", 4096, "affine"),
                                       ("ReLU",), ("Linear", 4096, 256, False)]
    assert layer_list(m.predictor) == [("Linear", 256, 4096, True), ("BN", 4096, "affine"),
                                       ("ReLU",), ("Linear", 4096, 256, False)]
    # 4096c + 4096 + 8192 + 4096*256; predictor 256*4096 + 4096 + 8192 + 4096*256
    assert trainable(m.projector) == {512: 3_158_016, 2048: 9_449_472}[c]
    assert trainable(m.predictor) == 2_109_440


@pytest.mark.parametrize("c", [512, 2048])
def test_swav_head_has_biases_and_a_2048_hidden_layer(c):
    m = built("swav", c)
    assert layer_list(m.projector) == [("Linear", c, 2048, True), ("BN", 2048, "affine"),
                                       ("ReLU",), ("Linear", 2048, 128, True)]
    assert trainable(m.projector) == {512: 1_316_992, 2048: 4_462_720}[c]
    assert m.prototypes.weight.shape == (3000, 128) and m.prototypes.bias is None


def test_split_bn_equals_k_separate_batchnorm_calls():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 5, 4, generator=g) * 3 + 1
    bn = SplitBatchNorm2d(3, num_splits=4)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, 1.5, -1.0]))
        bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    ref_mean, ref_var = [], []
    expected = torch.empty_like(x)
    for j in range(4):  # group j: samples j, j + 4, j + 8, j + 12
        rm, rv = torch.zeros(3), torch.ones(3)
        expected[j::4] = F.batch_norm(x[j::4], rm, rv, bn.weight, bn.bias, True, 0.1, bn.eps)
        ref_mean.append(rm)
        ref_var.append(rv)
    out = bn(x)
    assert torch.allclose(out, expected, atol=1e-5)
    assert torch.allclose(bn.running_mean, torch.stack(ref_mean).mean(0), atol=1e-6)
    assert torch.allclose(bn.running_var, torch.stack(ref_var).mean(0), atol=1e-6)
    # a whole-batch BN differs (the point of splitting), and eval mode is plain BN
    assert not torch.allclose(out, F.batch_norm(x, None, None, bn.weight, bn.bias, True),
                              atol=1e-3)
    bn.eval()
    assert torch.allclose(bn(x), F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight,
                                              bn.bias, False, 0.0, bn.eps), atol=1e-6)
    # gradients flow to the input and the affine parameters, also in channels_last
    bn.train()
    xc = x.clone().contiguous(memory_format=torch.channels_last).requires_grad_()
    bn(xc).square().sum().backward()
    assert xc.grad is not None and bn.weight.grad is not None
    with pytest.raises(ValueError, match="multiple of 4"):
        bn(torch.randn(6, 3, 2, 2))


def test_shuffle_then_unshuffle_is_the_identity_and_mocos_keys_keep_their_order():
    x = torch.arange(12.0).view(6, 2)
    torch.manual_seed(3)
    perm, inverse = shuffle_batch(6, "cpu")
    assert sorted(perm.tolist()) == list(range(6)) and perm.tolist() != list(range(6))
    assert torch.equal(x[perm][inverse], x)
    # MoCo: every BatchNorm2d of both encoders is split; keys come back in input order
    from simsiam.methods.mocov2 import MoCoV2
    from simsiam.models.backbones import build_backbone

    torch.manual_seed(0)
    model = MoCoV2(build_backbone("resnet18", "cifar"), 512, dim=8, queue_size=16,
                   bn_splits=4)
    splits = [m for m in model.key_backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert splits and all(isinstance(m, SplitBatchNorm2d) and m.num_splits == 4
                          for m in splits)
    imgs = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    probe = copy.deepcopy(model)
    torch.manual_seed(5)
    keys = model.keys(imgs)
    torch.manual_seed(5)
    perm, inverse = shuffle_batch(8, "cpu")
    with torch.no_grad():
        ref = probe.key_head(probe.key_backbone(imgs[perm]))[inverse]
    assert torch.allclose(keys, F.normalize(ref, dim=1), atol=1e-5)
    with torch.no_grad():  # without the shuffle the key encoder's groups differ: other keys
        plain = F.normalize(probe.key_head(probe.key_backbone(imgs)), dim=1)
    assert not torch.allclose(keys, plain, atol=1e-3)


def test_split_batchnorm_keeps_the_state_dict_keys_and_values():
    from simsiam.models.backbones import build_backbone

    torch.manual_seed(0)
    net = build_backbone("resnet18", "cifar")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    split = split_batchnorm(net, 8)
    after = split.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_swav_runs_its_head_once_on_all_crops():
    """The head's BN sees the large and the small crops together: its output equals the
    head applied to the concatenated features, not to each size apart."""
    from simsiam.methods.swav import SwAV
    from simsiam.models.backbones import build_backbone

    torch.manual_seed(0)
    model = SwAV(build_backbone("resnet18", "cifar"), 512, dim=16, hidden_dim=32,
                 num_prototypes=8)
    g = torch.Generator().manual_seed(2)
    views = [torch.randn(4, 3, 16, 16, generator=g) for _ in range(2)] + \
        [torch.randn(4, 3, 8, 8, generator=g) for _ in range(3)]
    ref = copy.deepcopy(model)
    zs, h1 = model.encode(views)
    with torch.no_grad():
        feats = torch.cat([ref.backbone(torch.cat(views[:2])), ref.backbone(torch.cat(views[2:]))])
        together = ref.projector(feats).chunk(5)
        ref2 = copy.deepcopy(ref)
        apart = list(ref2.projector(feats[:8]).chunk(2)) + list(ref2.projector(feats[8:]).chunk(3))
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(zs, together, strict=True))
    assert not torch.allclose(zs[0], apart[0], atol=1e-3)
    assert torch.allclose(h1, feats[:4], atol=1e-5)


def _larc(p, g, buf, lr, wd, adapt, trust=0.001, eps=1e-8, momentum=0.9):
    """One LARS step written out: apex LARC's rule where ``adapt``, else SGD without
    weight decay (SimCLR's and BYOL's exclusions); returns (p, momentum buffer)."""
    if adapt and p.norm() > 0 and g.norm() > 0:
        g = (g + wd * p) * (trust * p.norm() / (g.norm() + p.norm() * wd + eps))
    buf = g.clone() if buf is None else buf * momentum + g
    return p - lr * buf, buf


def test_lars_follows_larc_and_each_authors_exclusions():
    """SimCLR/BYOL groups (decay_groups): weights decayed and adapted, biases and BN
    parameters neither; SwAV's single group: every parameter adapted (apex LARC)."""
    from simsiam.methods.base import decay_groups, param_group

    gen = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    init = {n: p.detach().clone() for n, p in net.named_parameters()}
    grads = [{n: torch.randn(p.shape, generator=gen) for n, p in net.named_parameters()}
             for _ in range(2)]
    optim = OptimConfig(optimizer="lars", weight_decay=0.05, momentum=0.9)
    moved = []
    for groups, adapted in ((decay_groups("encoder", (net,)), {"0.weight"}),
                            ([param_group("encoder", (net,))], set(init))):
        with torch.no_grad():
            for n, p in net.named_parameters():
                p.copy_(init[n])
        opt = build_optimizer(groups, optim, lr=0.5)
        ref = {n: (init[n], None) for n in init}
        for step in grads:
            for n, p in net.named_parameters():
                p.grad = step[n].clone()
            opt.step()
            for n in init:  # weight decay only where adapted (the same filter)
                wd = 0.05 if n in adapted else 0.0
                ref[n] = _larc(ref[n][0], step[n], ref[n][1], 0.5, wd, n in adapted)
        for n, p in net.named_parameters():
            assert torch.allclose(p.detach(), ref[n][0], rtol=1e-6, atol=1e-7), (n, adapted)
        moved.append((net[0].bias.detach() - init["0.bias"]).abs().max().item())
    # the excluded bias moved by plain SGD (lr 0.5 x a unit gradient), the adapted one by
    # the trust ratio 0.001 ||p|| / ||g||: far less
    assert moved[0] > 0.1 and moved[1] < 0.01


@pytest.mark.parametrize("preset,method,expected", [
    ("cifar10", "simclr", ("lars", 1.0, 1e-4, 10.0, "step")),
    ("imagenet", "simclr", ("lars", 0.3, 1e-6, 10.0, "step")),
    ("cifar10", "byol", ("lars", 0.2, 1.5e-6, 10.0, "step")),
    ("imagenet", "swav", ("lars", 0.3, 1e-6, 10.0, "step")),
    ("cifar10", "mocov2", ("sgd", 0.03, 5e-4, 0.0, "epoch")),
])
def test_a_method_switch_brings_its_authors_optimizer(preset, method, expected):
    o = load_config(preset, {"method": method, "data.source": "x"}).optim
    assert (o.optimizer, o.base_lr, o.weight_decay, o.warmup_epochs, o.schedule) == expected


def test_the_cpu_preset_keeps_its_sgd_for_every_method_unless_asked():
    for method in ("simclr", "byol", "swav", "mocov2"):
        o = load_config("demo-cpu", {"method": method}).optim
        assert (o.optimizer, o.base_lr, o.weight_decay) == ("sgd", 0.8, 5e-4), method
    o = load_config("demo-cpu", {"method": "byol", "optim.method_optimizer": True,
                                 "train.epochs": 30}).optim
    assert (o.optimizer, o.base_lr, o.warmup_epochs) == ("lars", 0.2, 10.0)

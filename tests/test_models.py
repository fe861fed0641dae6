"""Backbone and heads: exact parameter counts and layer structure (SIMSIAM.md section 2)."""

import pytest
import torch
from torch import nn

from simsiam.cli import main
from simsiam.config import ModelConfig, load_config
from simsiam.methods import SimSiamConfig, build_method
from simsiam.models import PredictionHead, ProjectionHead, build_backbone, torchvision_resnet
from simsiam.models.backbones import count_parameters

from .conftest import REPO


def test_imagenet_preset_counts_match_official_builder():
    cfg = load_config(REPO / "configs" / "imagenet.yaml")
    model = build_method(cfg.method, cfg.model)
    assert count_parameters(model.backbone) == 23_508_032
    assert count_parameters(model.projector) == 12_591_104
    assert count_parameters(model.projector, trainable_only=False) == 12_591_104 + 2_048
    assert count_parameters(model.predictor) == 2_100_224
    assert count_parameters(model) == 38_199_360


def test_resnet18_with_hidden_512_counts():
    model = build_method("simsiam", ModelConfig(backbone="resnet18",
                                                simsiam=SimSiamConfig(proj_hidden_dim=512)))
    assert count_parameters(model) == 14_851_648


def test_describe_cli_prints_the_counts(capsys):
    assert main(["describe", "--config", str(REPO / "configs" / "imagenet.yaml")]) == 0
    out = capsys.readouterr().out
    assert "23,508,032" in out and "12,591,104" in out and "2,100,224" in out
    assert "trainable     38,199,360" in out


def test_projector_structure():
    head = ProjectionHead(512, 1024, 256, num_layers=3)
    kinds = [type(m).__name__ for m in head.layers]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU",
                     "Linear", "BatchNorm1d"]
    lin = [m for m in head.layers if isinstance(m, nn.Linear)]
    assert lin[0].bias is None and lin[1].bias is None
    assert lin[2].bias is not None and not lin[2].bias.requires_grad
    bns = [m for m in head.layers if isinstance(m, nn.BatchNorm1d)]
    assert [bn.num_features for bn in bns] == [1024, 1024, 256]
    assert bns[0].affine and bns[1].affine and not bns[2].affine


def test_predictor_structure():
    head = PredictionHead(2048, 512)
    kinds = [type(m).__name__ for m in head.layers]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert head.layers[0].bias is None and head.layers[3].bias is not None
    assert head.layers[1].num_features == 512


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_heads_with_out_dim_unlike_hidden_dim_run(layers):
    proj = ProjectionHead(64, 96, 40, num_layers=layers)
    pred = PredictionHead(40, 12)
    z = proj(torch.randn(5, 64))
    assert z.shape == (5, 40)
    assert pred(z).shape == (5, 40)


def test_cifar_stem_and_zero_init_residual():
    net = build_backbone("resnet18", "cifar")
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert isinstance(net.maxpool, nn.Identity) and isinstance(net.fc, nn.Identity)
    assert torch.count_nonzero(net.layer1[0].bn2.weight) == 0  # zero_init_residual
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 512)
    r50 = build_backbone("resnet50")
    assert torch.count_nonzero(r50.layer1[0].bn3.weight) == 0


def test_backbone_keys_are_torchvision_keys():
    ours = set(build_backbone("resnet50").state_dict())
    plain = set(torchvision_resnet("resnet50").state_dict())
    assert plain - ours == {"fc.weight", "fc.bias"} and ours <= plain


@pytest.mark.parametrize("stride,side", [(1, 1), (2, 1), (2, 2), (1, 2), (2, 3)])
def test_small_map_convs_equal_the_convolution_with_its_gradients(stride, side):
    from simsiam.models.backbones import SmallMapConv2d

    torch.manual_seed(0)
    conv = nn.Conv2d(16, 8, 3, stride, 1, bias=True)
    small = SmallMapConv2d(16, 8, 3, stride, 1, bias=True)
    small.load_state_dict(conv.state_dict())
    x = torch.randn(5, 16, side, side, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    want, got = conv(x), small(x2)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    (want ** 2).sum().backward()
    (got ** 2).sum().backward()
    torch.testing.assert_close(small.weight.grad, conv.weight.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(small.bias.grad, conv.bias.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(x2.grad, x.grad, rtol=1e-4, atol=1e-5)
    if want.shape[-1] == 1:  # the matrix product ran: the taps that never see x get 0
        seen = torch.zeros(3, 3, dtype=torch.bool)
        seen[1:1 + side, 1:1 + side] = True
        assert small.weight.grad[:, :, ~seen].abs().max() == 0


def test_the_backbone_uses_small_map_convs_with_torchvision_parameters():
    from torchvision import models as tvm

    from simsiam.models.backbones import SmallMapConv2d

    net = build_backbone("resnet18", "imagenet", zero_init_residual=False)
    # every 3x3 conv of the four stages; the 7x7 stem and 1x1 downsamples stay
    assert sum(isinstance(m, SmallMapConv2d) for m in net.modules()) == 16
    assert count_parameters(net) == 11_176_512
    ref = tvm.resnet18(weights=None)
    ref.fc = nn.Identity()
    ref.load_state_dict(net.state_dict())  # same keys and shapes
    torch.manual_seed(1)
    x = torch.randn(4, 3, 32, 32)  # layer4 sees 2x2 then 1x1 maps
    torch.testing.assert_close(net.train()(x), ref.train()(x), rtol=1e-4, atol=1e-5)

"""Backbone loading from every accepted layout; wrong layouts are named, never ignored."""

import pytest
import torch
from safetensors.torch import save_file

from simsiam.errors import CheckpointError
from simsiam.eval.loading import infer_arch, load_backbone_for_eval
from simsiam.methods import SimSiam
from simsiam.models import build_backbone, torchvision_resnet


@pytest.fixture(scope="module")
def tv_state():
    torch.manual_seed(0)
    net = torchvision_resnet("resnet18", "cifar")
    for m in net.modules():  # make running stats differ from the defaults
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.num_batches_tracked.fill_(7)
    return net.state_dict()


def backbone_tensors(backbone):
    return {k: v.clone() for k, v in backbone.state_dict().items()}


def test_plain_and_module_prefixed_keys_load_identically(tmp_path, tv_state):
    torch.save(tv_state, tmp_path / "plain.pth")
    torch.save({f"module.{k}": v for k, v in tv_state.items()}, tmp_path / "ddp.pth")
    a, info = load_backbone_for_eval(tmp_path / "plain.pth")
    b, _ = load_backbone_for_eval(tmp_path / "ddp.pth")
    assert (info["arch"], info["stem"], info["image_size"]) == ("resnet18", "cifar", 32)
    sa, sb = backbone_tensors(a), backbone_tensors(b)
    assert sa.keys() == {k for k in tv_state if not k.startswith("fc.")}
    for k in sa:
        assert torch.equal(sa[k], sb[k]) and torch.equal(sa[k], tv_state[k])


def test_official_simsiam_layout(tmp_path, tv_state):
    model = SimSiam(build_backbone("resnet18", "cifar"), 512, dim=64, proj_layers=2)
    model.backbone.load_state_dict({k: v for k, v in tv_state.items() if not k.startswith("fc")})
    sd = {f"module.encoder.{k}": v for k, v in model.backbone.state_dict().items()}
    sd |= {f"module.encoder.fc.{k[len('projector.layers.'):]}": v
           for k, v in model.state_dict().items() if k.startswith("projector.")}
    sd |= {f"module.{k}": v for k, v in model.state_dict().items() if k.startswith("predictor.")}
    torch.save({"epoch": 800, "arch": "resnet18", "state_dict": sd}, tmp_path / "official.tar")
    net, _ = load_backbone_for_eval(tmp_path / "official.tar")
    assert torch.equal(net.layer2[0].bn1.running_mean, tv_state["layer2.0.bn1.running_mean"])


def test_safetensors_without_metadata(tmp_path, tv_state):
    save_file({k: v.contiguous() for k, v in tv_state.items()}, str(tmp_path / "w.safetensors"))
    net, info = load_backbone_for_eval(tmp_path / "w.safetensors")
    assert info["arch"] == "resnet18" and info["normalize"] == "cifar10"


def test_unrelated_keys_are_named(tmp_path, tv_state):
    torch.save(tv_state | {"head.weight": torch.zeros(3), "queue": torch.zeros(2)},
               tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"head\.weight.*queue|queue.*head\.weight"):
        load_backbone_for_eval(tmp_path / "extra.pth")
    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "foo.pth")
    with pytest.raises(CheckpointError, match="no ResNet backbone found"):
        load_backbone_for_eval(tmp_path / "foo.pth")
    partial = {k: v for k, v in tv_state.items() if not k.startswith("layer4.1.")}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match=r"missing keys \['layer4\.1\."):
        load_backbone_for_eval(tmp_path / "partial.pth")


def test_infer_arch():
    for name in ("resnet18", "resnet34", "resnet50"):
        for stem in ("imagenet", "cifar"):
            assert infer_arch(build_backbone(name, stem).state_dict()) == (name, stem)


@pytest.mark.parametrize("method", ["simsiam", "simclr", "mocov2", "byol", "swav"])
def test_every_methods_training_checkpoint_gives_its_online_backbone(tmp_path, method):
    """A run's last.pt holds the method's other parts (BYOL's target network, MoCo's key
    encoder, head and queue, SwAV's prototypes and queue): the method that owns them
    names them, the online backbone loads, and a truly unknown key is still named."""
    from simsiam.config import ModelConfig
    from simsiam.eval.loading import extract_backbone_state
    from simsiam.methods import build_method

    torch.manual_seed(0)
    model = build_method(method, ModelConfig("resnet18", stem="cifar"), 32, 10)
    if method == "swav":  # with its feature queue buffers too
        from simsiam.methods import SwAV

        model = SwAV(build_backbone("resnet18", "cifar"), 512, queue_length=64)
    import warnings

    from simsiam.config import config_to_dict, load_config

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = config_to_dict(load_config("demo-cpu", {"method": method}))
    ckpt = {"format": 2, "config": config, "model": model.state_dict()}
    state = extract_backbone_state(ckpt, "last.pt")
    expected = {k: v for k, v in model.backbone.state_dict().items() if not k.startswith("fc.")}
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    path = tmp_path / "last.pt"
    torch.save(ckpt, path)
    backbone, info = load_backbone_for_eval(path)
    assert (info["arch"], info["image_size"]) == ("resnet18", 32)
    ckpt["model"]["foo.bar"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="foo.bar"):
        extract_backbone_state(ckpt, "last.pt")


def test_a_part_is_known_only_to_the_method_that_owns_it():
    """MoCo's key encoder in a checkpoint that says it is SimSiam's is not recognised."""
    from simsiam.eval.loading import extract_backbone_state

    net = build_backbone("resnet18", "cifar")
    state = {f"backbone.{k}": v for k, v in net.state_dict().items()}
    state["key_backbone.conv1.weight"] = net.conv1.weight
    with pytest.raises(CheckpointError, match="key_backbone.conv1.weight"):
        extract_backbone_state({"config": {"method": "simsiam"}, "model": state})
    assert extract_backbone_state({"config": {"method": "mocov2"}, "model": state})


def test_the_export_records_the_statistics_the_run_used_and_evaluation_keeps_them(tmp_path):
    """A 32 px run with augment.normalize auto trained on CIFAR-10 statistics: the export
    says cifar10 with the numbers, evaluating at another input size keeps them, and an
    older export that says auto is read the same way; --normalize still overrides."""
    import json
    import types
    import warnings

    from safetensors import safe_open

    from simsiam.augment.views import CIFAR10_MEAN, CIFAR10_STD
    from simsiam.config import load_config
    from simsiam.train.checkpoint import Checkpointer, save_backbone

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = load_config("demo-cpu", {"augment.normalize": "auto", "model.stem": "cifar"})
    net = build_backbone("resnet18", "cifar")
    ctx = types.SimpleNamespace(is_main=True, barrier=lambda: None)
    path = Checkpointer(tmp_path, ctx).export_backbone(net, cfg)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["normalize"] == "cifar10"
    assert json.loads(meta["normalize_mean"]) == list(CIFAR10_MEAN)
    assert json.loads(meta["normalize_std"]) == list(CIFAR10_STD)
    assert json.loads(meta["eval_transform"])["mean"] == list(CIFAR10_MEAN)
    _, info = load_backbone_for_eval(path)
    assert (info["image_size"], info["normalize"]) == (32, "cifar10")
    old = tmp_path / "old.safetensors"  # written before: normalize auto
    save_backbone({k: v.contiguous() for k, v in net.state_dict().items()}, old,
                  {"arch": "resnet18", "stem": "cifar", "image_size": "32", "normalize": "auto"})
    assert load_backbone_for_eval(old)[1]["normalize"] == "cifar10"
    from simsiam.eval.inputs import load_for_eval  # the eval commands' flags over the file's

    args = types.SimpleNamespace(checkpoint=str(path), image_size=64, normalize=None)
    assert load_for_eval(args)[1]["normalize"] == "cifar10"  # only the size changed
    args = types.SimpleNamespace(checkpoint=str(old), image_size=64, normalize="imagenet")
    assert load_for_eval(args)[1]["normalize"] == "imagenet"

"""timm backbones (``model.backbone: timm/<name>``), their export and evaluation loading,
AdamW, ``optim.lr_scaling``, and LiT's ``model.image_init`` / ``model.lock_image``."""

from __future__ import annotations

import math
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from simsiam.cli import main
from simsiam.config import ModelConfig, config_to_dict, load_config
from simsiam.config.validate import check_lock_image
from simsiam.distributed import DistContext
from simsiam.distributed.plan import batch_plan, peak_lr
from simsiam.errors import CheckpointError, ConfigError, ConfigNotice
from simsiam.eval.inputs import check_image_size
from simsiam.eval.loading import load_backbone_for_eval
from simsiam.methods import METHODS, SimSiam
from simsiam.models.backbones import (
    _timm_feature_dim,
    backbone_state_dict,
    build_backbone,
    count_parameters,
    feature_dim,
    timm_input_problem,
    torchvision_resnet,
)
from simsiam.train.checkpoint import Checkpointer, load_backbone_file, save_checkpoint
from simsiam.train.optim import build_optimizer
from simsiam.train.summary import lr_rule
from simsiam.weights import build_initial_method as build_method

CPU = torch.device("cpu")
SMALL_HEADS = {"model.simsiam.proj_layers": 2, "model.simsiam.dim": 64,
               "model.simsiam.proj_hidden_dim": 64, "model.simsiam.pred_hidden_dim": 16}


def _cfg(**overrides):
    return load_config(None, {"train.epochs": 2, **overrides})


def _export(tmp_path: Path, backbone: nn.Module, cfg) -> Path:
    return Checkpointer(tmp_path, DistContext(device=CPU)).export_backbone(backbone, cfg)


def _randomise_bn(net: nn.Module) -> None:
    """Running statistics that differ from the defaults, so that loading them shows."""
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.num_batches_tracked.fill_(7)


# ------------------------------------------------------------------------ the backbone


def test_timm_resnet18_has_torchvision_resnet18s_parameters_without_fc():
    net = build_backbone("timm/resnet18")
    tv = torchvision_resnet("resnet18")
    fc = 512 * 1000 + 1000
    assert count_parameters(tv) - fc == count_parameters(net) == 11_176_512
    assert feature_dim("timm/resnet18") == 512
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 512)  # pooled, no classifier


def test_feature_dim_is_the_pooled_width_and_is_cached():
    _timm_feature_dim.cache_clear()
    assert feature_dim("timm/resnet18") == 512
    assert feature_dim("timm/resnet18") == 512
    info = _timm_feature_dim.cache_info()
    assert (info.misses, info.hits) == (1, 1)  # the model was built once
    # MobileNetV3 has a 1x1 conv after its pooling: num_features 288, output 1024 wide
    net = build_backbone("timm/mobilenetv3_small_050").eval()
    assert net.num_features == 288
    assert feature_dim("timm/mobilenetv3_small_050") == net(torch.randn(1, 3, 64, 64)).shape[1]
    assert feature_dim("timm/mobilenetv3_small_050") == 1024


def test_importing_the_package_and_its_config_does_not_import_timm():
    code = ("import sys, simsiam, simsiam.config, simsiam.methods, simsiam.models; "
            "assert 'timm' not in sys.modules, 'timm imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_config_accepts_timm_names_and_names_the_key_otherwise():
    assert _cfg(**{"model.backbone": "timm/resnet18"}).model.backbone == "timm/resnet18"
    with pytest.raises(ConfigError, match=r"model\.backbone = 'timm/resnet999' .*timm has no "
                                          r"model 'resnet999'.*timm\.list_models\('\*resnet\*'\)"):
        _cfg(**{"model.backbone": "timm/resnet999"})
    with pytest.raises(ConfigError, match=r"model\.stem = 'cifar' .*torchvision ResNets .*"
                                          r"model\.stem=imagenet"):
        _cfg(**{"model.backbone": "timm/resnet18", "model.stem": "cifar"})
    with pytest.raises(ConfigError, match=r"model\.backbone = 'resnet9' .*resnet18.*timm/<name>"):
        _cfg(**{"model.backbone": "resnet9"})
    with pytest.raises(ConfigError, match="model.stem=imagenet"):
        build_backbone("timm/resnet18", "cifar")


VIT = "timm/vit_tiny_patch16_224"  # its patch embedding asserts 224 x 224 inputs


def _size_refused(key: str, side: int, change: str) -> str:
    return (f"{key} = {side} is not allowed: {VIT} is made for 224 x 224 px inputs and cannot "
            f"run at {side} x {side} (AssertionError: Input height ({side}) doesn't match "
            f"model (224).); {change}, or choose a timm model that takes {side} px (a "
            "convolutional one such as timm/resnet18 or timm/convnext_atto takes any size)")


def test_a_timm_model_made_for_224px_is_refused_at_32px_naming_both_sizes(
        cifar_dir, tmp_path, monkeypatch, capsys):
    assert timm_input_problem("resnet18", 32) is None  # convolutional: any size
    assert timm_input_problem("convnext_atto", 32) is None
    assert timm_input_problem("vit_tiny_patch16_224", 224) is None
    assert _cfg(**{"model.backbone": VIT, "data.image_size": 224}).model.backbone == VIT
    with pytest.raises(ConfigError) as exc:
        _cfg(**{"model.backbone": VIT, "data.image_size": 32})
    assert str(exc.value) == "defaults: " + _size_refused("data.image_size", 32,
                                                          "set data.image_size=224")
    with pytest.raises(ConfigError) as exc:  # SwAV's small crops: 96/224 of the view side
        _cfg(**{"method": "swav", "model.backbone": VIT, "data.image_size": 224,
                "augment.small_crops": 2})
    assert str(exc.value) == "defaults: " + _size_refused(
        "augment.small_size", 96, "set augment.small_crops=0 (no small crops)")
    # on the command line: exit 2 before any image is decoded or the run folder is made
    monkeypatch.setenv("SIMSIAM_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "run"
    rc = main(["pretrain", "--config", "demo-cpu", "--data", str(cifar_dir), "--out", str(out),
               "--set", f"model.backbone={VIT}", "--set", "data.image_size=32",
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.endswith("simsiam pretrain: error: demo-cpu: " + _size_refused(
        "data.image_size", 32, "set data.image_size=224") + "\n")
    assert not out.exists() and not (tmp_path / "cache").exists()


def test_evaluation_at_a_size_a_timm_model_cannot_take_is_refused(cifar_dir, tmp_path,
                                                                  monkeypatch, capsys):
    with pytest.raises(ConfigError, match=r"^--image-size 64: timm/vit_tiny_patch16_224 is "
                                          r"made for 224 x 224 px inputs .*; pass "
                                          r"--image-size 224$"):
        check_image_size(VIT, 64)
    check_image_size(VIT, 224)
    check_image_size("resnet18", 64)  # not timm: nothing to try
    cfg = _cfg(**{"model.backbone": VIT, "data.image_size": 224})
    path = _export(tmp_path, build_backbone(VIT), cfg)
    monkeypatch.setenv("SIMSIAM_CACHE_DIR", str(tmp_path / "cache"))
    rc = main(["embed", "--checkpoint", str(path), "--data", str(cifar_dir), "--image-size",
               "32", "--out", str(tmp_path / "e.csv"), "--no-progress"])
    assert rc == 2
    assert capsys.readouterr().err == (
        f"simsiam embed: error: --image-size 32: {VIT} is made for 224 x 224 px inputs and "
        "cannot run at 32 x 32 (AssertionError: Input height (32) doesn't match model (224).);"
        " pass --image-size 224\n")
    assert not (tmp_path / "e.csv").exists() and not (tmp_path / "cache").exists()


def test_simsiam_on_a_timm_backbone_trains_at_32px():
    torch.manual_seed(0)
    cfg = _cfg(**{"model.backbone": "timm/resnet18", "data.image_size": 32, **SMALL_HEADS})
    model = build_method("simsiam", cfg.model, 32)
    views = [torch.randn(4, 3, 32, 32) for _ in range(2)]
    loss, metrics = model(views)
    assert loss.ndim == 0 and math.isfinite(loss.item()) and -1.0 <= loss.item() <= 1.0
    assert metrics["features"].shape == (4, 512)
    loss.backward()
    grads = [p.grad for p in model.backbone.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.backbone.conv1.weight.grad.abs().sum() > 0


def test_backbone_state_dict_unties_shared_tensors():
    net = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    net[1].weight = net[0].weight  # tied, as some timm models do
    sd = backbone_state_dict(net)
    assert sd["0.weight"].data_ptr() != sd["1.weight"].data_ptr()
    assert torch.equal(sd["0.weight"], sd["1.weight"])


# ------------------------------------------------------------------ export and evaluation


@pytest.fixture(scope="module")
def timm_run(tmp_path_factory):
    """A timm/resnet18 SimSiam at 32 px: its export and its training checkpoint."""
    out = tmp_path_factory.mktemp("timm_run")
    torch.manual_seed(1)
    cfg = _cfg(**{"model.backbone": "timm/resnet18", "data.image_size": 32, **SMALL_HEADS,
                  "train.out": str(out)})
    model = build_method("simsiam", cfg.model, 32)
    _randomise_bn(model.backbone)
    path = _export(out, model.backbone, cfg)
    save_checkpoint({"format": 2, "config": config_to_dict(cfg), "model": model.state_dict()},
                    out / "checkpoints" / "last.pt")
    return out, path, cfg, model


def test_an_exported_timm_backbone_loads_for_eval_with_identical_outputs(timm_run):
    out, path, cfg, model = timm_run
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert (meta["format"], meta["arch"], meta["stem"]) == ("timm", "timm/resnet18", "imagenet")
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    model.backbone.eval()
    with torch.no_grad():
        want = model.backbone(x)
    for source in (path, out / "checkpoints" / "last.pt"):
        net, info = load_backbone_for_eval(source)
        assert (info["arch"], info["stem"], info["image_size"], info["normalize"]) == (
            "timm/resnet18", "imagenet", 32, "cifar10")  # auto at 32 px: what it used
        assert not net.training
        with torch.no_grad():
            assert torch.equal(net(x), want), source


def test_a_timm_backbone_with_missing_or_extra_keys_is_refused_naming_them(timm_run, tmp_path):
    _, path, _, _ = timm_run
    state, meta = load_backbone_file(path)
    del state["layer4.1.bn2.running_var"]
    state["head.fc.weight"] = torch.zeros(2, 2)
    save_file(state, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match=r"does not fit a timm/resnet18 backbone: missing "
                                              r"keys \['layer4\.1\.bn2\.running_var'\], "
                                              r"unexpected keys \['head\.fc\.weight'\]"):
        load_backbone_for_eval(tmp_path / "bad.safetensors")


# ----------------------------------------------------------------------------- AdamW


def test_adamw_follows_its_formula_with_clips_betas_and_no_decay_groups():
    w0, b0 = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.3, -0.1])
    w, b = nn.Parameter(w0.clone()), nn.Parameter(b0.clone())
    groups = [{"name": "weights", "params": [w]},
              {"name": "norms", "params": [b], "no_weight_decay": True}]
    cfg = _cfg(**{"optim.optimizer": "adamw", "optim.weight_decay": 0.2})
    assert (cfg.optim.betas, cfg.optim.eps) == ([0.9, 0.98], 1e-6)
    lr = 0.01
    opt = build_optimizer(groups, cfg.optim, lr)
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.2, 0.0]
    assert [g["betas"] for g in opt.param_groups] == [(0.9, 0.98)] * 2
    grads = [(torch.tensor([0.5, -1.0, 2.0]), torch.tensor([1.0, 0.25])),
             (torch.tensor([-0.3, 0.4, 1.0]), torch.tensor([-2.0, 0.5]))]
    b1, b2, eps = 0.9, 0.98, 1e-6

    def expected(p0, gs, wd, b2=b2):
        p, m, v = p0.double(), torch.zeros_like(p0).double(), torch.zeros_like(p0).double()
        for t, g in enumerate(gs, start=1):
            g = g.double()
            p = p * (1 - lr * wd)
            m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
            p = p - lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps)
        return p.float()

    for gw, gb in grads:
        w.grad, b.grad = gw.clone(), gb.clone()
        opt.step()
    torch.testing.assert_close(w.detach(), expected(w0, [g[0] for g in grads], 0.2),
                               rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(b.detach(), expected(b0, [g[1] for g in grads], 0.0),
                               rtol=1e-6, atol=1e-7)
    # the second step differs from torch's default beta2 0.999: optim.betas are used
    assert not torch.allclose(w.detach(), expected(w0, [g[0] for g in grads], 0.2, 0.999))


@pytest.mark.parametrize("key,value", [("optim.betas", [0.9, 1.0]), ("optim.betas", [0.9]),
                                       ("optim.betas", [-0.1, 0.9]), ("optim.eps", 0.0),
                                       ("optim.lr_scaling", "sqrt")])
def test_bad_adamw_and_scaling_values_are_named(key, value):
    with pytest.raises(ConfigError, match=rf"{key} = .* is not allowed"):
        _cfg(**{key: value})


# ------------------------------------------------------------------------ lr scaling


def test_lr_scaling_linear_scales_by_the_batch_and_none_takes_base_lr():
    linear = batch_plan(1000, 128, 4, 0.05)  # the default keeps every caller's rule
    none = batch_plan(1000, 128, 4, 0.05, "none")
    assert linear.lr_scaling == "linear" and linear.peak_lr == pytest.approx(0.025)
    assert (none.peak_lr, none.lr_scaling, none.steps_per_epoch) == (0.05, "none", 7)
    cfg = _cfg(**{"optim.lr_scaling": "none", "optim.base_lr": 5e-4, "train.batch_size": 512})
    plan = batch_plan(2048, cfg.train.batch_size, 1, cfg.optim.base_lr, cfg.optim.lr_scaling)
    assert plan.peak_lr == 5e-4 == peak_lr(5e-4, 512, "none")
    assert peak_lr(5e-4, 512) == 1e-3
    assert lr_rule(plan, cfg.optim.base_lr) == ("lr 0.0005 = base_lr 0.0005 (not scaled by "
                                                "the batch: optim.lr_scaling none)")
    assert lr_rule(batch_plan(1000, 128, 1, 0.8), 0.8) == "lr 0.4 = base_lr 0.8 x 128/256"
    with pytest.raises(ConfigError, match=r"optim\.lr_scaling = 'sqrt'"):
        batch_plan(1000, 128, 1, 0.05, "sqrt")


# --------------------------------------------------------------- LiT: image_init, lock


@pytest.fixture(scope="module")
def cifar_file(tmp_path_factory):
    """An exported ResNet-18 (CIFAR stem, 32 px, normalize auto) with trained-looking BN."""
    out = tmp_path_factory.mktemp("cifar_run")
    torch.manual_seed(2)
    cfg = _cfg(**{"model.backbone": "resnet18", "model.stem": "cifar", "data.image_size": 32,
                  **SMALL_HEADS})
    backbone = build_backbone("resnet18", "cifar")
    _randomise_bn(backbone)
    return _export(out, backbone, cfg), backbone_state_dict(backbone)


def _assert_equal_states(module: nn.Module, want: dict[str, torch.Tensor]) -> None:
    got = module.state_dict()
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), k


def test_image_init_adopts_the_files_arch_stem_and_normalisation_with_a_notice(cifar_file):
    path, _ = cifar_file
    with pytest.warns(ConfigNotice, match=r"model\.backbone/model\.stem resnet50/imagenet -> "
                                          r"resnet18/cifar; augment\.normalize auto -> cifar10"):
        cfg = _cfg(**{"model.image_init": str(path.parent)})  # the run directory
    m = cfg.model
    assert (m.backbone, m.stem, cfg.augment.normalize) == ("resnet18", "cifar", "cifar10")
    assert m.image_init == str(path.resolve())
    with warnings.catch_warnings():  # the same arch and stem: nothing to say
        warnings.simplefilter("error", ConfigNotice)
        same = _cfg(**{"model.image_init": str(path), "model.backbone": "resnet18",
                       "model.stem": "cifar", "data.image_size": 32})
    assert same.augment.normalize == "cifar10"
    with pytest.warns(ConfigNotice, match="resnet18/cifar$"):  # no word on normalisation
        explicit = _cfg(**{"model.image_init": str(path), "augment.normalize": "imagenet"})
    assert explicit.augment.normalize == "imagenet"  # only "auto" follows the file


def test_image_init_without_metadata_infers_the_arch_from_the_keys(tmp_path):
    net = torchvision_resnet("resnet34", "cifar")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()},
              str(tmp_path / "plain.safetensors"))
    with pytest.warns(ConfigNotice, match="resnet34/cifar"):
        cfg = _cfg(**{"model.image_init": str(tmp_path / "plain.safetensors")})
    assert (cfg.model.backbone, cfg.model.stem, cfg.augment.normalize) == (
        "resnet34", "cifar", "cifar10")


def test_image_init_weights_are_loaded_before_the_method_copies_them(cifar_file):
    path, want = cifar_file
    with pytest.warns(ConfigNotice):
        cfg = _cfg(**{"model.image_init": str(path), **SMALL_HEADS})
    _assert_equal_states(build_method("simsiam", cfg.model, 32).backbone, want)
    moco = build_method("mocov2", cfg.model, 32)  # its key encoder is a copy made on build
    _assert_equal_states(moco.backbone, want)
    _assert_equal_states(moco.key_backbone, want)


def test_image_init_of_a_timm_run_adopts_timm(timm_run):
    out, path, _, model = timm_run
    with pytest.warns(ConfigNotice, match="resnet50/imagenet -> timm/resnet18/imagenet"):
        cfg = _cfg(**{"model.image_init": str(out), **SMALL_HEADS})
    assert (cfg.model.backbone, cfg.augment.normalize) == ("timm/resnet18", "cifar10")
    _assert_equal_states(build_method("simsiam", cfg.model, 32).backbone,
                         backbone_state_dict(model.backbone))


def test_image_init_errors_name_the_key_the_file_and_the_keys(cifar_file, tmp_path):
    path, _ = cifar_file
    missing = tmp_path / "nowhere" / "backbone.safetensors"
    with pytest.raises(ConfigError, match=rf"model\.image_init = '{re.escape(str(missing))}' "
                                          "does not exist"):
        _cfg(**{"model.image_init": str(missing)})
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match=r"model\.image_init = .*junk\.safetensors' cannot be "
                                          r"read"):
        _cfg(**{"model.image_init": str(tmp_path / "junk.safetensors")})
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(ConfigError, match=r"model\.image_init = .*empty_run"):
        _cfg(**{"model.image_init": str(tmp_path / "empty_run")})
    # a model section that was not fitted to the file (built by hand, not load_config)
    wrong = ModelConfig(backbone="resnet34", stem="cifar", image_init=str(path))
    with pytest.raises(ConfigError, match=rf"model\.image_init = '{re.escape(str(path))}' "
                                          r"does not fit the "
                                          r"backbone: missing keys \['layer1\.2\..*resnet18 "
                                          r"\(cifar stem\)"):
        build_method("simsiam", wrong, 32)


class _Lockable(SimSiam):
    """A stand-in for a method with a second tower (CLIP), to test the plumbing."""

    can_lock_image = True

    def lock_image(self) -> None:
        self.backbone.requires_grad_(False)
        self.locked = True


def test_lock_image_is_refused_for_one_tower_methods_and_random_towers(cifar_file, monkeypatch):
    path, want = cifar_file
    with pytest.warns(ConfigNotice), pytest.raises(
            ConfigError, match=r"model\.lock_image = True .*'simsiam' has no second tower.*"
                               r"only clip"):
        _cfg(**{"model.lock_image": True, "model.image_init": str(path)})
    with pytest.raises(ConfigError, match=r"model\.lock_image = True .*locking a randomly "
                                          r"initialised tower would train against random "
                                          r"features; set model\.image_init"):
        check_lock_image(ModelConfig(lock_image=True), _Lockable, "x.yaml")
    with pytest.raises(ConfigError, match="has no second tower"):
        build_method("simsiam", ModelConfig("resnet18", "cifar", lock_image=True), 32)
    # a method that can lock: validated, then locked by build_method after the load
    monkeypatch.setitem(METHODS, "simsiam", _Lockable)
    with pytest.warns(ConfigNotice):
        cfg = _cfg(**{"model.lock_image": True, "model.image_init": str(path), **SMALL_HEADS})
    model = build_method("simsiam", cfg.model, 32)
    assert model.locked and not any(p.requires_grad for p in model.backbone.parameters())
    _assert_equal_states(model.backbone, want)

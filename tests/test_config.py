"""Config loading: presets parse, and bad input is named before any work."""

import pytest

from simsiam.config import Config, load_config
from simsiam.errors import ConfigError

from .conftest import REPO


@pytest.mark.parametrize("name", ["cifar10", "imagenet", "demo-cpu"])
def test_presets_load(name):
    cfg = load_config(REPO / "configs" / f"{name}.yaml")
    assert isinstance(cfg, Config)


def test_cifar_preset_is_appendix_d():
    cfg = load_config(REPO / "configs" / "cifar10.yaml")
    m = cfg.model.simsiam
    assert (cfg.model.backbone, cfg.model.stem, m.proj_layers) == ("resnet18", "cifar", 2)
    assert (m.proj_hidden_dim, m.dim, m.pred_hidden_dim) == (2048, 2048, 512)
    assert (cfg.optim.base_lr, cfg.optim.weight_decay, cfg.optim.momentum) == (0.03, 5e-4, 0.9)
    assert (cfg.train.batch_size, cfg.train.epochs, cfg.data.image_size) == (512, 800, 32)
    assert cfg.augment.blur_prob == 0.0 and cfg.augment.crop_scale == [0.2, 1.0]


def test_unknown_key_is_named(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match=r"train\.epoch") as err:
        load_config(f)
    assert str(f) in str(err.value)


def test_wrong_type_is_named(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("optim:\n  base_lr: fast\n")
    with pytest.raises(ConfigError, match=r"optim\.base_lr"):
        load_config(f)


@pytest.mark.parametrize("key,value,match", [
    ("optim.base_lr", -0.1, "optim.base_lr"),
    ("train.batch_size", 0, "train.batch_size"),
    ("train.batch_size", 1, "at least 2 samples"),
    ("optim.warmup_epochs", 200, "warmup_epochs=0"),
    ("train.epochs", 0, "train.epochs"),
    ("model.backbone", "resnet9", "resnet18"),
    ("method", "simclr2", "method"),
    ("train.seed", -5, "train.seed"),
    ("train.seed", 2**64, "train.seed"),
    ("train.amp", False, "write fp32"),  # what YAML makes of `amp: off`
])
def test_bad_values_are_named(key, value, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, {key: value})


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_preset_names_resolve_without_a_path():
    assert load_config("cifar10").model.stem == "cifar"
    with pytest.raises(ConfigError, match="presets"):
        load_config("cifar11")


def test_cli_set_overrides_any_key_with_yaml_values():
    from simsiam.cli import build_parser
    from simsiam.config.overrides import parse_set

    args = build_parser().parse_args(["pretrain", "--config", "demo-cpu", "--epochs", "3",
                                      "--set", "optim.base_lr=0.4",
                                      "--set", "data.test_per_class=null"])
    from simsiam.cli.train import run_overrides

    cfg = load_config(args.config, run_overrides(args))
    assert cfg.optim.base_lr == 0.4 and cfg.data.test_per_class is None
    assert cfg.train.epochs == 3 and cfg.train.batch_size == 128  # untouched flags keep the preset
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_set(["optim.base_lr"])
    with pytest.raises(ConfigError, match="unknown config key 'optim.base_rate'"):
        load_config(None, parse_set(["optim.base_rate=1"]))
    with pytest.raises(ConfigError, match="bad value for 'optim.base_lr'"):
        load_config(None, parse_set(["optim.base_lr=abc"]))
    both = build_parser().parse_args(["pretrain", "--config", "demo-cpu", "--epochs", "2",
                                      "--set", "train.epochs=3"])
    with pytest.raises(ConfigError, match="both as a flag and with --set"):
        run_overrides(both)


def test_a_swav_queue_that_would_never_fill_is_refused():
    over = {"method": "swav", "augment.small_crops": 6, "model.swav.queue_size": 3840}
    with pytest.raises(ConfigError, match=r"swav\.queue_start_epochs = 15.0 .* never be used"):
        load_config("demo-cpu", over)  # 6 epochs, the queue would start at epoch 15
    cfg = load_config("demo-cpu", over | {"model.swav.queue_start_epochs": 1})
    assert cfg.model.swav.queue_size == 3840

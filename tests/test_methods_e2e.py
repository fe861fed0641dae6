"""Each comparison method through the real trainer on real CIFAR-10 images: its loss goes
down, the kNN monitor gives a finite accuracy, the backbone is exported; and the method
presets carry the published settings."""

from __future__ import annotations

import math

import pytest

from simsiam.config import load_config
from simsiam.errors import ConfigError
from simsiam.methods import BYOL, MoCoV2, SimCLR, SwAV, build_method
from simsiam.train.logger import read_metrics
from simsiam.train.trainer import pretrain

EPOCHS = 3


def _cfg(cifar_dir, out, method, **extra):
    # 16 px in float32 (bf16 convolutions on 1x1 maps are wrong on this CPU: BENCHMARKS.md)
    return load_config("demo-cpu", {
        "method": method, "data.source": str(cifar_dir), "data.image_size": 16,
        "data.per_class": 20, "data.test_per_class": 8, "train.batch_size": 32,
        "train.epochs": EPOCHS, "train.out": str(out), "train.log_every": 1,
        "train.amp": "fp32", "optim.warmup_epochs": 0, "optim.base_lr": 0.1,
        "eval.knn_every": EPOCHS, "eval.knn_k": 20, "eval.online_probe": False} | extra)


@pytest.mark.slow
@pytest.mark.parametrize("method,extra", [
    ("simclr", {}),
    # shuffle BN in 2 groups of 16, the cpu scale's group size (8 groups of batch 128)
    ("mocov2", {"model.mocov2.queue_size": 64, "model.mocov2.bn_splits": 2}),
    ("byol", {"model.byol.hidden_dim": 512}),  # narrower than 4096 to keep the test short
    ("swav", {"model.swav.num_prototypes": 100, "model.swav.freeze_prototypes_epochs": 0.5,
              "augment.small_crops": 2}),
])
def test_each_method_trains_on_real_images(cifar_dir, tmp_path, method, extra):
    cfg = _cfg(cifar_dir, tmp_path / method, method, **extra)
    res = pretrain(cfg, progress=False)
    assert res.steps == EPOCHS * (200 // 32)
    loss = res.epoch_loss
    assert all(math.isfinite(v) for v in loss.values())
    if method == "mocov2":
        # MoCo's loss first rises while the random initial queue fills with real keys
        # (measured: 3.57 in epoch 1, then 4.00-4.02); the check is that it learned to
        # score the positive above the L = 64 negatives: below chance, log(1 + L) = 4.17.
        assert loss[EPOCHS] < math.log(1 + 64) - 0.1, loss
    else:
        assert loss[EPOCHS] < loss[1], loss
    assert 0.0 <= res.knn[EPOCHS] <= 100.0
    # the label-free signals of every method, from the random init (epoch 0) on
    assert sorted(res.evals) == [0, EPOCHS]
    for figures in res.evals.values():
        assert 0 <= figures["copy_top1"] <= figures["copy_top5"] <= 100
        assert 0 <= figures["alignment"] <= 4 and -4 <= figures["uniformity"] <= 0
    assert res.backbone_path is not None and res.backbone_path.stat().st_size > 1_000_000
    steps = [r for r in read_metrics(tmp_path / method) if r["kind"] == "step"]
    dim = getattr(cfg.model, method).dim
    assert all(r["collapse_healthy"] == pytest.approx(dim ** -0.5) for r in steps)


def test_method_presets_carry_the_published_settings():
    cifar = {"data.source": "x"}
    simclr = load_config("cifar10", cifar | {"method": "simclr"})
    assert (simclr.model.simclr.dim, simclr.model.simclr.hidden_dim) == (128, None)
    model = build_method("simclr", simclr.model, simclr.data.image_size)
    assert isinstance(model, SimCLR) and model.temperature == 0.5
    moco = load_config("cifar10", cifar | {"method": "mocov2"})
    model = build_method("mocov2", moco.model, moco.data.image_size)
    assert isinstance(model, MoCoV2) and moco.optim.base_lr == 0.03
    assert (model.queue.keys.shape[0], model.momentum, model.temperature) == (4096, 0.99, 0.2)
    big = load_config("imagenet", {"data.source": "x", "method": "mocov2"})
    model = build_method("mocov2", big.model, big.data.image_size)
    assert (model.queue.keys.shape[0], model.momentum) == (65536, 0.999)
    byol = load_config("cifar10", cifar | {"method": "byol"})
    model = build_method("byol", byol.model, byol.data.image_size)
    assert isinstance(model, BYOL) and (byol.model.byol.dim, byol.model.byol.hidden_dim) == (
        256, 4096)
    assert model.base_tau == 0.996
    swav = load_config("cifar10", cifar | {"method": "swav"})
    assert swav.augment.small_crops == 6 and swav.augment.crop_scale == [0.14, 1.0]
    model = build_method("swav", swav.model, swav.data.image_size, steps_per_epoch=97)
    assert isinstance(model, SwAV) and model.freeze_prototypes_steps == 97
    # --set wins over the method's settings; SimSiam presets are untouched
    assert load_config("cifar10", cifar | {"method": "byol", "model.byol.dim": 512}
                       ).model.byol.dim == 512
    assert load_config("cifar10", cifar).model.simsiam.dim == 2048


def test_moco_queue_must_be_a_multiple_of_the_batch():
    with pytest.raises(ConfigError, match=r"model\.mocov2\.queue_size = 4096.*multiple of "
                                          r"train\.batch_size \(384\)"):
        load_config("cifar10", {"data.source": "x", "method": "mocov2",
                                "train.batch_size": 384})


def test_a_runs_saved_config_loads_verbatim(tmp_path):
    from simsiam.config import config_to_yaml

    cfg = load_config("cifar10", {"data.source": "x", "method": "byol", "model.byol.dim": 512})
    (tmp_path / "config.yaml").write_text(config_to_yaml(cfg))
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg and again.model.byol.dim == 512 and again.model.byol.hidden_dim == 4096

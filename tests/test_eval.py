"""kNN monitor and collapse metric against hand-computed values (SIMSIAM.md section 4)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from simsiam.eval.collapse import collapse_std, healthy_std
from simsiam.eval.knn import extract_features, knn_predict, knn_top1


def test_knn_weighted_vote_by_hand():
    bank = F.normalize(torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]]), dim=1)
    labels = torch.tensor([0, 1, 1, 2])
    q = torch.tensor([[1.0, 0.0]])
    # k = 3 nearest: sims 1.0 (class 0), 0.8 (class 1), 0.0 (class 1)
    scores = knn_predict(bank, labels, q, num_classes=3, k=3, temperature=0.5)
    expected = torch.tensor([[math.exp(2.0), math.exp(1.6) + math.exp(0.0), 0.0]])
    assert torch.allclose(scores, expected, rtol=1e-6)
    assert scores.argmax(1).item() == 0
    # A hot temperature lets two weaker neighbours of class 1 outvote one strong one.
    assert knn_predict(bank, labels, q, 3, k=3, temperature=100.0).argmax(1).item() == 1


def test_knn_top1_and_k_larger_than_bank():
    g = torch.Generator().manual_seed(0)
    centers = F.normalize(torch.randn(4, 16, generator=g), dim=1)
    labels = torch.arange(4).repeat_interleave(10)
    bank = F.normalize(centers[labels] + 0.05 * torch.randn(40, 16, generator=g), dim=1)
    queries = F.normalize(centers + 0.05 * torch.randn(4, 16, generator=g), dim=1)
    assert knn_top1(bank, labels, queries, torch.arange(4), 4, k=5) == 100.0
    assert knn_top1(bank, labels, queries, torch.arange(4), 4, k=500) == 100.0  # k capped


def test_knn_ignores_feature_scale_and_k1_on_the_bank_is_exact():
    g = torch.Generator().manual_seed(1)
    bank = torch.randn(300, 32, generator=g)
    labels = torch.randint(0, 5, (300,), generator=g)
    queries = torch.randn(100, 32, generator=g)
    base = knn_predict(bank, labels, queries, 5, k=20).argmax(1)
    scale = 10 ** torch.empty(100, 1).uniform_(-2, 2, generator=g)  # factors in [0.01, 100]
    assert torch.equal(knn_predict(bank, labels, queries * scale, 5, k=20).argmax(1), base)
    assert knn_top1(bank, labels, bank, labels, 5, k=1) == 100.0


def test_extract_features_uses_eval_mode_and_restores_it():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten())
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    images = np.random.default_rng(0).integers(0, 255, (10, 8, 8, 3), dtype=np.uint8)
    feats = extract_features(net, images, image_size=8, normalize="cifar10", batch_size=4)
    assert feats.shape == (10, 4) and torch.allclose(feats.norm(dim=1), torch.ones(10))
    assert net.training
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN stats untouched


def test_collapse_metric():
    z = torch.randn(4096, 256, generator=torch.Generator().manual_seed(0))
    assert collapse_std(z).item() == pytest.approx(healthy_std(256), rel=0.02)
    z = torch.randn(512, 2048, generator=torch.Generator().manual_seed(1))
    assert abs(collapse_std(z).item() - 0.0221) < 0.002
    identical = torch.randn(1, 2048).expand(64, 2048)
    assert collapse_std(identical).item() < 1e-6
    collapsed = torch.ones(64, 256) + 1e-6 * torch.randn(64, 256)
    assert collapse_std(collapsed).item() < 1e-5
    assert healthy_std(2048) == pytest.approx(0.0221, abs=1e-4)
    with pytest.raises(ValueError):
        collapse_std(torch.randn(1, 8))


def test_collapse_guard_needs_patience_and_fires_once():
    from simsiam.eval.collapse import CollapseGuard

    guard = CollapseGuard(dim=256, ratio=0.3, patience=5)  # threshold 0.3/16
    low, high = 0.01, 0.06
    assert not any(guard.update(s, low) for s in range(1, 5))  # 4 steps: not yet
    assert not guard.update(5, high)  # recovered: the streak restarts
    fired = [s for s in range(6, 20) if guard.update(s, low)]
    assert fired == [10]  # steps 6..10 below the threshold
    assert "since step 6" in guard.message(10) and "0.30/sqrt(d)" in guard.message(10)


def test_effective_rank_of_known_matrices():
    from simsiam.eval.collapse import effective_rank, rank_reference

    g = torch.Generator().manual_seed(0)
    rank1 = torch.randn(100, 1, generator=g) @ torch.randn(1, 30, generator=g)
    assert effective_rank(rank1).item() == pytest.approx(1.0, abs=1e-3)
    q, _ = torch.linalg.qr(torch.randn(200, 7, generator=g))  # 7 orthonormal columns
    assert effective_rank(q).item() == pytest.approx(7.0, abs=1e-3)
    assert effective_rank(5.0 * q).item() == pytest.approx(7.0, abs=1e-3)  # scale-free
    # isotropic Gaussian: close to min(n, d) when n and d differ a lot (within 2%) ...
    for n, d in ((4096, 64), (64, 4096)):
        r = effective_rank(torch.randn(n, d, generator=g)).item()
        assert 0.98 * 64 < r <= 64
    # ... and, as Marchenko-Pastur spreads the singular values, about 0.80 x n when square
    assert effective_rank(torch.randn(512, 512, generator=g)).item() / 512 == pytest.approx(
        0.80, abs=0.02)
    assert rank_reference(128, 2048) == pytest.approx(127.0, abs=0.5)
    # max_rows bounds the rows used; the result is a tensor on z's device (no host sync)
    r = effective_rank(torch.randn(1000, 16, generator=g), max_rows=8)
    assert isinstance(r, torch.Tensor) and r.dim() == 0 and r.item() <= 8
    with pytest.raises(ValueError):
        effective_rank(torch.randn(8))


def test_a_rank_guard_fires_on_the_rank_and_names_it():
    from simsiam.config import EvalConfig
    from simsiam.eval.collapse import CollapseGuard

    guard = CollapseGuard(dim=2048, ratio=0.1, patience=3, measure="rank", healthy=127.0)
    assert guard.threshold == pytest.approx(12.7)
    assert [guard.update(s, v) for s, v in enumerate((50.0, 12.0, 9.0, 5.0, 4.0), 1)] == [
        False, False, False, True, False]
    assert "effective rank of z (RankMe) has stayed below 12.7" in guard.message(4)
    assert "since step 2" in guard.message(4)
    with pytest.raises(ValueError):
        CollapseGuard(dim=16, measure="rank")  # no healthy value
    # the run's guard: the method's measure with "auto", else the one named
    auto = CollapseGuard.for_run(EvalConfig(), 2048, "rank", 127.0)
    assert (auto.measure, auto.threshold) == ("rank", pytest.approx(12.7))
    named = CollapseGuard.for_run(EvalConfig(collapse_measure="std"), 2048, "rank", 127.0)
    assert (named.measure, named.threshold) == ("std", pytest.approx(0.3 / 2048 ** 0.5))


def test_each_method_names_the_measure_that_can_see_its_collapse():
    from simsiam.config import ModelConfig
    from simsiam.methods import SimSiamConfig, build_method

    small = dict(proj_layers=2, proj_hidden_dim=32, dim=32, pred_hidden_dim=8)
    default = build_method("simsiam", ModelConfig("resnet18", simsiam=SimSiamConfig(**small)))
    no_out_bn = build_method("simsiam", ModelConfig("resnet18", simsiam=SimSiamConfig(
        **small, proj_out_bn=False)))
    assert (default.collapse_measure, no_out_bn.collapse_measure) == ("rank", "std")
    # SimCLR's projector ends in a BN (gain, no shift: every dimension has zero batch mean)
    assert build_method("simclr", ModelConfig("resnet18")).collapse_measure == "rank"
    assert build_method("mocov2", ModelConfig("resnet18")).collapse_measure == "std"
    loss, metrics = default([torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)])
    assert metrics["embedding"].shape == (4, 32) and metrics["embedding"].grad_fn is None


@pytest.mark.parametrize("key,value", [("eval.collapse_measure", "entropy"),
                                       ("eval.rank_ratio", 1.5), ("eval.rank_rows", 1),
                                       ("eval.feature_rank_rows", 0)])
def test_bad_collapse_settings_are_named(key, value):
    from simsiam.config import load_config
    from simsiam.errors import ConfigError

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config("demo-cpu", {key: value})


def test_an_evaluation_commands_own_per_class_cap_brings_no_advice_to_lift_it(tmp_path):
    """--per-class on knn/linear/embed is the user's choice: no CapWarning (whose advice,
    --set data.per_class=null, is for pretrain's preset caps)."""
    import types
    import warnings

    import numpy as np
    from PIL import Image

    from simsiam.eval.inputs import eval_data

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(
                    tmp_path / split / c / f"{i}.png")
    args = types.SimpleNamespace(data=str(tmp_path), per_class=1, test_per_class=None,
                                 seed=None, no_progress=True)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        train, test = eval_data(args, {"image_size": 8, "seed": 0})
    assert len(train) == 2 and len(test) == 6
    assert not [w for w in seen if "per_class" in str(w.message)]

"""``simsiam compare``: every method under one budget, each in its own process; the table
holds the measured values of each run and the method's traits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simsiam.errors import ConfigError
from simsiam.reproduce.compare import format_compare, method_config, run_compare

# 16 px in float32 (bf16 convolutions on 1x1 maps are wrong on this CPU: BENCHMARKS.md)
TINY = {"data.per_class": 12, "data.test_per_class": 4, "train.batch_size": 24,
        "data.image_size": 16, "train.amp": "fp32", "train.log_every": 1,
        "train.device": "cpu", "optim.warmup_epochs": 0}


def test_method_configs_differ_only_by_the_method(tmp_path):
    base = method_config("simsiam", 3, "cpu", "x", tmp_path)
    byol = method_config("byol", 3, "cpu", "x", tmp_path)
    assert (byol.model.byol.dim, byol.model.byol.hidden_dim) == (256, 4096)
    for section in ("data", "optim", "train"):
        a, b = vars(getattr(base, section)), vars(getattr(byol, section))
        assert {k for k in a if a[k] != b[k]} <= {"out"}, section
    with pytest.raises(ConfigError, match="budget"):
        method_config("simsiam", 0, "cpu", "x", tmp_path)
    with pytest.raises(ConfigError, match="unknown"):
        method_config("dino", 3, "cpu", "x", tmp_path)


@pytest.mark.slow
def test_compare_two_methods_on_real_images(cifar_dir, tmp_path):
    out = tmp_path / "cmp"
    rows = run_compare(["simsiam", "simclr"], 2, "cpu", str(cifar_dir), out, progress=False,
                       linear_epochs=2, extra=TINY)
    assert [(r.method, r.negatives, r.momentum_encoder, r.queue) for r in rows] == [
        ("simsiam", False, False, False), ("simclr", True, False, False)]
    for r in rows:
        recs = [json.loads(x) for x in (Path(r.run_dir) / "metrics.jsonl").open()]
        epochs = [x for x in recs if x["kind"] == "epoch"]
        assert len(epochs) == 2 and r.batch_size == 24 and r.status == "ok"
        assert r.knn_top1 == [x for x in recs if x["kind"] == "eval"][-1]["knn_top1"]
        assert r.train_seconds == pytest.approx(sum(x["seconds"] for x in epochs))
        assert r.peak_mem_mib == max(x["peak_mem_mib"] for x in epochs) > 100
        assert 0 <= r.linear_top1 <= 100
    table = (out / "compare.md").read_text()
    assert table == format_compare(rows, "cpu", 2)
    assert "| simclr | yes | no | no | 24 |" in table
    assert (out / "compare.png").stat().st_size > 10_000
    again = run_compare(["simsiam", "simclr"], 2, "cpu", str(cifar_dir), out, progress=False,
                        linear=False, extra=TINY)
    assert [r.status for r in again] == ["reused", "reused"]


def test_clip_joins_a_comparison_only_on_data_with_captions(tmp_path):
    from simsiam.reproduce.compare import CompareRow, default_methods

    assert "clip" not in default_methods("../shared/data/cifar10-jpeg")
    assert default_methods("photos/captions.csv")[-1] == "clip"
    with pytest.raises(ConfigError, match="--methods clip: it learns from captions, and --data "
                       "'cifar10' has none"):
        method_config("clip", 2, "cpu", "cifar10", tmp_path)
    with pytest.raises(ConfigError, match="cpu scale only"):
        method_config("clip", 2, "cifar10", "x/captions.csv", tmp_path)
    cfg = method_config("clip", 5, "cpu", "x/captions.csv", tmp_path)
    assert (cfg.method, cfg.optim.optimizer, cfg.train.epochs) == ("clip", "adamw", 5)
    simsiam = method_config("simsiam", 5, "cpu", "x/captions.csv", tmp_path)
    assert simsiam.data.holdout_fraction == cfg.data.holdout_fraction == 0.2
    rows = [CompareRow("simsiam", False, False, False, 100, None, None, 60.0, 18.5, None),
            CompareRow("clip", True, False, False, 100, None, None, 120.0, 80.0, 15.0)]
    table = format_compare(rows, "cpu", 30)
    assert "| copy top-1 % | retrieval i2t R@10 % |" in table
    assert "| clip | yes | no | no | 100 | 80.0 | 15.0 | 2.0 min | - |" in table


def test_compare_and_reproduce_take_set_overrides_for_every_run(tmp_path):
    """``--set`` reaches every method's config, after its own published settings: the
    cpu scale's SGD gives way to the authors' LARS with optim.method_optimizer=true."""
    from simsiam.cli import build_parser
    from simsiam.cli.reproduce import grid_overrides
    from simsiam.reproduce.compare import method_config

    args = build_parser().parse_args(["compare", "--budget", "3", "--device", "cpu", "--set",
                                      "optim.method_optimizer=true"])
    extra = grid_overrides(args)
    assert extra == {"optim.method_optimizer": True, "train.device": "cpu"}
    held = method_config("byol", 3, "cpu", "x", tmp_path)
    from simsiam.errors import ConfigNotice

    with pytest.warns(ConfigNotice, match="byol's published warm-up"):  # 10 of 3 epochs
        authors = method_config("byol", 3, "cpu", "x", tmp_path, extra)
    assert (held.optim.optimizer, held.optim.base_lr) == ("sgd", 0.8)
    assert (authors.optim.optimizer, authors.optim.base_lr) == ("lars", 0.2)
    assert authors.augment.view2_solarize_prob == 0.2  # its views either way
    args = build_parser().parse_args(["reproduce", "table3", "--set", "train.seed=3"])
    assert grid_overrides(args) == {"train.seed": 3}

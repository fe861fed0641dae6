"""``simsiam reproduce``: every grid row is a valid config that carries its switch, the
runner writes its table and plot from measured values, reuses finished rows, and refuses
to overwrite another run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from simsiam.errors import ConfigError
from simsiam.reproduce import EXPERIMENTS, SCALES, row_config, run_experiment

PAPER_EXPERIMENTS = {"fig2", "table1", "table2", "table3", "similarity", "symmetry", "dim"}


def test_every_experiment_of_the_issue_exists():
    assert set(EXPERIMENTS) == PAPER_EXPERIMENTS


@pytest.mark.parametrize("scale", SCALES)
def test_every_row_is_a_valid_config_at_every_scale(scale, tmp_path):
    for exp in EXPERIMENTS.values():
        for row in exp.rows:
            if scale == "cpu" and not row.cpu:
                continue
            cfg = row_config(exp, row, scale, "somewhere", tmp_path)
            tree = OmegaConf.structured(cfg)
            flat = {key: OmegaConf.select(tree, key) for key in row.overrides}
            for key, value in row.overrides.items():
                assert flat[key] == value, (exp.name, row.label, key)


def test_rows_carry_the_papers_settings(tmp_path):
    def cfg(name, label, scale="cpu"):
        exp = EXPERIMENTS[name]
        row = next(r for r in exp.rows if r.label == label)
        return row_config(exp, row, scale, "x", tmp_path)

    assert not cfg("fig2", "without stop-gradient").model.simsiam.stop_gradient
    assert cfg("fig2", "with stop-gradient").eval.knn_every == 1  # curves per epoch
    sym, asym2 = cfg("symmetry", "symmetric"), cfg("symmetry", "asymmetric 2x")
    assert asym2.train.epochs == 2 * sym.train.epochs and not asym2.model.simsiam.symmetric
    assert sym.eval.knn_every == sym.train.epochs  # kNN once, at the end
    assert cfg("table1", "baseline (pred. lr decayed)").model.simsiam.fix_pred_lr is False
    big = cfg("table2", "batch 4096", "cifar10")
    assert big.optim.warmup_epochs == 10 and big.train.epochs == 800
    assert big.optim.base_lr == 0.03  # lr = 0.03 x 4096 / 256, scaled by the trainer
    cpu_rows = [r.label for r in EXPERIMENTS["table2"].rows if r.cpu]
    assert cpu_rows == ["batch 64", "batch 128", "batch 256", "batch 512"]
    d256 = cfg("dim", "d = 256").model.simsiam
    assert (d256.dim, d256.pred_hidden_dim) == (256, 64)
    # table3 (a): the paper's 10-epoch warm-up of its 100-epoch run; a tenth at the cpu scale
    assert cfg("table3", "(a) none", "imagenet").optim.warmup_epochs == 10
    assert cfg("table3", "(a) none", "cifar10").optim.warmup_epochs == 10
    # cpu: a tenth of 3 epochs is shorter than the demo preset's 1-epoch warm-up: kept
    assert cfg("table3", "(a) none").optim.warmup_epochs == 1
    from dataclasses import replace

    long_cpu = replace(EXPERIMENTS["table3"], cpu_epochs=50)  # a tenth of 50 epochs: 5
    assert row_config(long_cpu, long_cpu.rows[0], "cpu", "x", tmp_path).optim \
        .warmup_epochs == 5
    assert cfg("table3", "(c) default").optim.warmup_epochs == 1  # the cpu preset's
    with pytest.raises(ConfigError, match="scale"):
        row_config(EXPERIMENTS["fig2"], EXPERIMENTS["fig2"].rows[0], "laptop", "x", tmp_path)


# fp32: bf16 on the CPU gives layer4's 3x3 convs (1x1 maps at 16 px) NaN weight gradients.
TINY = {"data.per_class": 12, "data.test_per_class": 4, "train.batch_size": 24,
        "data.image_size": 16, "train.amp": "fp32", "model.simsiam.dim": 64,
        "model.simsiam.proj_hidden_dim": 64, "model.simsiam.pred_hidden_dim": 16,
        "train.log_every": 1, "train.device": "cpu"}


def test_runner_writes_measured_table_and_plot_then_reuses_rows(cifar_dir, tmp_path):
    out = tmp_path / "rep"
    res = run_experiment("similarity", "cpu", str(cifar_dir), out, progress=False,
                         linear=True, linear_epochs=2, extra=TINY | {"train.epochs": 2})
    assert [r.label for r in res] == ["cosine", "cross-entropy"]
    assert all(r.status == "ok" and r.epochs == 2 and r.steps == 2 * (120 // 24) for r in res)
    for r in res:
        recs = [json.loads(x) for x in (Path(r.run_dir) / "metrics.jsonl").open()]
        last = [x for x in recs if x["kind"] == "step" and x["epoch"] == 1]
        assert r.final_loss == [x for x in recs if x["kind"] == "epoch"][-1]["loss"]
        assert r.collapse_std == pytest.approx(sum(x["collapse_std"] for x in last) / len(last))
        assert r.knn_top1 == [x for x in recs if x["kind"] == "eval"][-1]["knn_top1"]
        assert 0 <= r.linear_top1 <= 100 and 0 <= r.knn_top1 <= 100
    assert res[0].final_loss < 0 < res[1].final_loss  # -cos vs a cross-entropy
    table = (out / "similarity" / "table.md").read_text()
    assert "| cosine | 68.1 |" in table and "| cross-entropy | 63.2 |" in table
    assert (out / "similarity" / "similarity.png").stat().st_size > 10_000
    saved = json.loads((out / "similarity" / "results.json").read_text())
    assert [r["knn_top1"] for r in saved["rows"]] == [r.knn_top1 for r in res]
    again = run_experiment("similarity", "cpu", str(cifar_dir), out, progress=False,
                           linear=False, extra=TINY | {"train.epochs": 2})
    assert [r.status for r in again] == ["reused", "reused"]
    assert [r.knn_top1 for r in again] == [r.knn_top1 for r in res]
    # A changed grid would have to replace the finished runs: refused without --overwrite.
    with pytest.raises(ConfigError, match="overwrite"):
        run_experiment("similarity", "cpu", str(cifar_dir), out, progress=False,
                       linear=False, extra=TINY | {"train.epochs": 3})


def test_a_row_that_stops_on_a_nonfinite_loss_is_reported_as_diverged(tmp_path, monkeypatch):
    from simsiam.train import trainer

    def diverge(cfg, **_):
        raise FloatingPointError("the loss became NaN or infinite at step 3 (epoch 1); ...")

    monkeypatch.setattr(trainer, "pretrain", diverge)
    res = run_experiment("similarity", "cpu", "x", tmp_path, progress=False)
    assert [r.status for r in res] == ["diverged: the loss became NaN or infinite at step 3 "
                                       "(epoch 1); ..."] * 2
    assert all(r.linear_top1 is None and r.knn_top1 is None for r in res)
    assert "| cosine | 68.1 | - | - | - | - | - | - | 0 | diverged:" in (
        tmp_path / "similarity" / "table.md").read_text()

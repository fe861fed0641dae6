"""Learning-rate schedule against the formulas of SIMSIAM.md section 3."""

import math

import pytest

from simsiam.train.schedule import cosine_lr, predictor_lr, scaled_lr


def test_linear_scaling_and_cosine_values():
    peak = scaled_lr(0.05, 512)
    assert peak == pytest.approx(0.1)
    assert cosine_lr(peak, 0, 0, 100, 10) == pytest.approx(0.1)
    assert cosine_lr(peak, 3, 0, 100, 10) == pytest.approx(0.0793893, abs=1e-7)
    # per-epoch schedule (official code): constant within an epoch
    assert cosine_lr(peak, 3, 57, 100, 10) == pytest.approx(0.0793893, abs=1e-7)
    # per-step schedule: fractional epochs
    expected = 0.1 * 0.5 * (1 + math.cos(math.pi * 3.5 / 10))
    assert cosine_lr(peak, 3, 50, 100, 10, per_step=True) == pytest.approx(expected, abs=1e-12)
    assert cosine_lr(peak, 9, 99, 100, 10, per_step=True) < 1e-4


def test_fixed_predictor_lr_stays_at_initial_lr():
    peak = scaled_lr(0.05, 512)
    for epoch in range(10):
        enc = cosine_lr(peak, epoch, 0, 100, 10)
        assert predictor_lr(peak, enc, fixed=True) == pytest.approx(0.1)
        assert predictor_lr(peak, enc, fixed=False) == enc


def test_warmup_is_linear_then_cosine():
    peak = 0.4
    assert cosine_lr(peak, 0, 0, 10, 20, warmup_epochs=2) == pytest.approx(0.4 / 20)
    assert cosine_lr(peak, 1, 9, 10, 20, warmup_epochs=2) == pytest.approx(0.4)
    assert cosine_lr(peak, 2, 0, 10, 20, warmup_epochs=2) == pytest.approx(0.4)
    mid = cosine_lr(peak, 11, 0, 10, 20, warmup_epochs=2)
    assert mid == pytest.approx(0.4 * 0.5 * (1 + math.cos(math.pi * 9 / 18)))


def test_a_warmup_of_a_fractional_number_of_steps_never_exceeds_the_peak():
    # 0.5 epoch of 5 steps = 2.5 warm-up steps (a preset's warm-up shortened for --epochs 1)
    lrs = [cosine_lr(0.4, 0, s, 5, 1, warmup_epochs=0.5, per_step=True) for s in range(5)]
    assert lrs[:3] == pytest.approx([0.16, 0.32, 0.4])
    assert max(lrs) == pytest.approx(0.4)

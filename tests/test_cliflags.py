"""Numeric flags of every subcommand are refused out of range before any work, with exit
code 2 and a message naming the flag, the value and the allowed range; the ranges are
those of the config keys the flags stand for (issue 18, kind 1)."""

from __future__ import annotations

import pytest

from simsiam.cli import build_parser
from simsiam.config import load_config
from simsiam.errors import ConfigError

EVAL = ["--checkpoint", "run", "--data", "x"]
BAD = [  # (argv before the flag, flag, value, words in the message)
    (["knn", *EVAL], "--k", "0", "use an integer >= 1 (eval.knn_k)"),
    (["knn", *EVAL], "--k", "-3", "use an integer >= 1 (eval.knn_k)"),
    (["knn", *EVAL], "--t", "0", "use a number > 0 (eval.knn_t)"),
    (["knn", *EVAL], "--t", "-0.1", "use a number > 0 (eval.knn_t)"),
    (["knn", *EVAL], "--t", "nan", "nan is not a finite number: use a number > 0 (eval.knn_t)"),
    (["knn", *EVAL], "--t", "1e400", "is not a finite number"),
    (["knn", *EVAL], "--per-class", "0", "use an integer >= 1 (data.per_class)"),
    (["knn", *EVAL], "--image-size", "4", "use an integer in [8, 4096] (data.image_size)"),
    (["knn", *EVAL], "--image-size", "100000", "use an integer in [8, 4096]"),
    (["knn", *EVAL], "--seed", "-1", "use an integer in [0, 9.22337e+18] (train.seed)"),
    (["linear", *EVAL], "--epochs", "-2", "use an integer >= 1"),
    (["linear", *EVAL], "--epochs", "0", "use an integer >= 1"),
    (["linear", *EVAL], "--batch-size", "0", "use an integer >= 2"),
    (["linear", *EVAL], "--lr", "-1", "use a number > 0"),
    (["linear", *EVAL], "--lr", "abc", "'abc' is not a number > 0"),
    (["embed", *EVAL, "--out", "e.npz"], "--test-per-class", "0",
     "use an integer >= 1 (data.test_per_class)"),
    (["neighbors", *EVAL], "--k", "0", "use an integer >= 1"),
    (["neighbors", *EVAL], "--brute-force-max", "-1", "use an integer >= 0"),
    (["retrieval", "--checkpoint", "run", "--data", "x"], "--holdout-fraction", "1",
     "use a number in [0, 1) (data.holdout_fraction)"),
    (["pretrain"], "--epochs", "0", "use an integer >= 1 (train.epochs)"),
    (["pretrain"], "--batch-size", "1", "use an integer >= 2 (train.batch_size)"),
    (["pretrain"], "--stop-after-epoch", "0", "use an integer >= 1"),
    (["bench"], "--steps", "0", "use an integer >= 1"),
    (["bench"], "--warmup", "-1", "use an integer >= 0"),
    (["bench"], "--synthetic", "99999999999999999999999", "use an integer in [0, 1e+06]"),
    (["report", "run"], "--points", "-5", "use an integer >= 0"),
    (["compare"], "--budget", "0", "use an integer >= 1 (train.epochs)"),
]


@pytest.mark.parametrize("argv,flag,value,words", BAD)
def test_an_out_of_range_flag_stops_with_exit_2_naming_flag_value_and_range(
        argv, flag, value, words, capsys):
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args([*argv, flag, value])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: " in err and words in err, err


@pytest.mark.parametrize("key,value", [("eval.knn_k", 0), ("eval.knn_t", 0.0),
                                       ("data.per_class", 0), ("data.image_size", 4),
                                       ("data.image_size", 100000),
                                       ("train.epochs", 0), ("train.batch_size", 1),
                                       ("data.holdout_fraction", 1.0), ("train.seed", -1)])
def test_the_config_refuses_the_same_values(key, value):
    with pytest.raises(ConfigError, match=key):
        load_config("demo-cpu", {key: value})


def test_values_in_range_pass_through_as_numbers():
    args = build_parser().parse_args(["knn", *EVAL, "--k", "5000", "--t", "0.07"])
    assert (args.k, args.t) == (5000, 0.07)  # k above the bank is capped when it runs
    args = build_parser().parse_args(["report", "run", "--points", "0"])
    assert args.points == 0  # 0: no t-SNE map

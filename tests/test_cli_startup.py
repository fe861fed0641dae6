"""The command line answers before the library loads: the parser imports no torch, long
flags are never abbreviated, and the refusals of a run that need no data come before any
image is decoded (issue 28)."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from simsiam import choices
from simsiam.cli import build_parser, flags, main
from simsiam.config import config_to_dict, config_to_yaml, load_config
from simsiam.methods import METHODS
from simsiam.reproduce import EXPERIMENTS
from simsiam.train.checkpoint import FORMAT, save_checkpoint

SRC = Path(__file__).resolve().parents[1] / "src"


def test_the_parser_builds_without_torch():
    code = ("import simsiam.cli, sys; simsiam.cli.build_parser(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "False"


def test_the_choices_are_the_registries_names():
    assert flags.METHOD_NAMES == tuple(METHODS)
    assert choices.EXPERIMENT_NAMES == tuple(EXPERIMENTS)


def _parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:  # the subcommands' parsers: the choices of one action
        if isinstance(action.choices, dict):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_no_parser_takes_an_abbreviated_flag(capsys):
    found = list(_parsers(build_parser()))
    assert len(found) == 15  # simsiam and its 14 subcommands
    assert all(p.allow_abbrev is False for p in found)
    with pytest.raises(SystemExit) as exc:
        main(["pretrain", "--config", "demo-cpu", "--epoch", "5"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --epoch 5" in capsys.readouterr().err


def test_an_unknown_flag_is_answered_by_its_subcommand_with_the_nearest_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["pretrain", "--config", "demo-cpu", "--epoch", "5"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "simsiam pretrain: error: unrecognized arguments: --epoch 5 (did you mean --epochs?)" \
        in err and "usage: simsiam pretrain" in err
    with pytest.raises(SystemExit):
        main(["knn", "--checkpoint", "r", "--data", "x", "--kk=5"])
    assert "simsiam knn: error: unrecognized arguments: --kk=5 (did you mean --k?)" \
        in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["pretrain", "--config", "demo-cpu", "--bogus"])
    assert capsys.readouterr().err.rstrip().endswith("unrecognized arguments: --bogus")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["knn", "--checkpoint", "r", "--data", "x", "--image", "64"])
    args = build_parser().parse_args(["pretrain", "--config", "demo-cpu", "--epochs", "5"])
    assert args.epochs == 5


def test_the_command_line_never_names_a_method():
    names = "|".join(m for m in METHODS if m != "simsiam")  # simsiam: the program's name
    for path in (SRC / "simsiam" / "cli").glob("*.py"):
        text = path.read_text()
        assert not re.search(r"\.method\s*(==|!=|in\b)", text), path.name
        assert not re.search(rf"[\"']({names})[\"']", text), path.name


def _finished_run(out: Path, epochs: int) -> Path:
    """A run directory whose checkpoint has trained all ``epochs``; its data folder does
    not exist, so decoding anything would fail."""
    cfg = load_config("demo-cpu", {"data.source": str(out.parent / "no-such-folder"),
                                   "train.out": str(out), "train.epochs": epochs})
    out.mkdir(parents=True)
    (out / "config.yaml").write_text(config_to_yaml(cfg), encoding="utf-8")
    save_checkpoint({"format": FORMAT, "epoch": epochs, "step": 6, "batch_in_epoch": 0,
                     "model": {}, "config": config_to_dict(cfg)},
                    out / "checkpoints" / "last.pt")
    return out / "config.yaml"


@pytest.fixture
def no_decoding(monkeypatch):
    import simsiam.train.trainer as trainer

    def refuse(*_args, **_kwargs):
        raise AssertionError("the data was loaded before the refusal")

    monkeypatch.setattr(trainer, "load_data", refuse)
    monkeypatch.setattr(trainer, "input_pipeline", refuse)


def test_resuming_a_finished_run_is_refused_before_any_decoding(tmp_path, capsys, no_decoding):
    config = _finished_run(tmp_path / "run", epochs=2)
    code = main(["pretrain", "--config", str(config), "--out", str(tmp_path / "run"),
                 "--resume", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "already finished all 2 epochs; nothing to resume" in err


def test_a_run_directory_in_use_is_refused_before_any_decoding(tmp_path, capsys, no_decoding):
    config = _finished_run(tmp_path / "run", epochs=2)
    assert main(["pretrain", "--config", str(config), "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["pretrain", "--config", str(config), "--out", str(empty), "--resume",
                 "--no-progress"]) == 2
    assert "has no checkpoints/last.pt to resume from" in capsys.readouterr().err
    assert main(["pretrain", "--config", str(config), "--out", str(empty), "--epochs", "2",
                 "--stop-after-epoch", "3", "--no-progress"]) == 2
    assert "--stop-after-epoch 3: use an epoch from 1 to train.epochs = 2" in \
        capsys.readouterr().err


def test_the_demo_preset_and_data_follow_the_method():
    from simsiam.train.demo import demo_data, demo_preset

    assert demo_preset(None) == demo_preset("simsiam") == demo_preset("byol") == "demo-cpu"
    assert demo_preset("clip") == "clip-cpu"
    assert demo_data("my/folder", "clip") == "my/folder"
    caption_methods = [m for m, cls in METHODS.items() if cls.batch_kind == "captions"]
    assert caption_methods == ["clip"]

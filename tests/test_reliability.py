"""Faults lose nothing: resume equivalence across processes, SIGTERM, SIGKILL during a
checkpoint write, NaN losses, too-small datasets and malicious checkpoints.

The runs are tiny (80 real CIFAR-10 training images, batch 16, ResNet-18 at 32 px) and
go through ``python -m simsiam`` in new processes where the issue asks for a process
boundary. See RELIABILITY.md for the table these tests back.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from simsiam.cli import main
from simsiam.config import config_to_yaml
from simsiam.errors import CheckpointError, DataError
from simsiam.train.checkpoint import load_checkpoint, save_checkpoint
from simsiam.train.interrupt import RunInterrupted
from simsiam.train.logger import read_metrics
from simsiam.train.trainer import pretrain

from .test_pretrain_e2e import tiny_cfg

pytestmark = pytest.mark.slow

EPOCHS, STEPS_PER_EPOCH = 10, 5  # 80 images // batch 16


def _cfg(cifar_dir, out, **extra):
    return tiny_cfg(cifar_dir, out, **{
        "data.per_class": 8, "data.test_per_class": 4, "train.batch_size": 16,
        "train.epochs": EPOCHS, "train.log_every": 1, "eval.knn_every": 5,
        "eval.knn_at_start": False} | extra)


def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "simsiam", *args], capture_output=True,
                          text=True, timeout=300, **kw)


def _steps(run: Path) -> list[tuple]:
    return [(r["step"], r["epoch"], r["lr"], r["lr_predictor"], r["loss"])
            for r in read_metrics(run) if r["kind"] == "step"]


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a
               if a[k].is_floating_point())


@pytest.fixture(scope="module")
def straight(cifar_dir, tmp_path_factory):
    """10 epochs in one process, keeping the checkpoint of epoch 3."""
    root = tmp_path_factory.mktemp("straight")
    (root / "cfg.yaml").write_text(config_to_yaml(_cfg(cifar_dir, root / "run")))
    proc = _cli("pretrain", "--config", str(root / "cfg.yaml"), "--set", "train.save_every=3",
                "--no-progress")
    assert proc.returncode == 0, proc.stderr
    return root


def test_resume_in_a_new_process_equals_a_straight_run(straight, tmp_path):
    cfg = str(straight / "cfg.yaml")
    out = str(tmp_path / "split")
    first = _cli("pretrain", "--config", cfg, "--out", out, "--stop-after-epoch", "3",
                 "--no-progress")
    assert first.returncode == 0 and "stopped after epoch 3 of 10" in first.stdout, first.stderr
    at_switch = load_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")
    reference = load_checkpoint(straight / "run" / "checkpoints" / "epoch_0003.pt")
    assert at_switch["epoch"] == 3 and at_switch["step"] == reference["step"] == 15
    opt_a, opt_b = at_switch["optimizer"], reference["optimizer"]
    assert opt_a["param_groups"] == opt_b["param_groups"]
    assert opt_a["state"].keys() == opt_b["state"].keys() and opt_a["state"]
    for k in opt_a["state"]:  # every momentum buffer, bit for bit
        assert torch.equal(opt_a["state"][k]["momentum_buffer"],
                           opt_b["state"][k]["momentum_buffer"])
    assert torch.equal(at_switch["torch_rng"], reference["torch_rng"])
    rest = _cli("pretrain", "--config", cfg, "--out", out, "--resume", "--no-progress")
    assert rest.returncode == 0, rest.stderr
    a, b = _steps(straight / "run"), _steps(tmp_path / "split")
    assert len(a) == EPOCHS * STEPS_PER_EPOCH and a == b  # same lr, predictor lr and loss
    per_epoch_lr = {e: lr for _, e, lr, _, _ in a}
    assert len(set(per_epoch_lr.values())) == EPOCHS  # per-step cosine: the lr does change
    final_a = load_file(str(straight / "run" / "backbone.safetensors"))
    final_b = load_file(str(tmp_path / "split" / "backbone.safetensors"))
    assert _max_diff(final_a, final_b) <= 1e-6


def test_sigterm_saves_a_checkpoint_and_resume_finishes_the_same_run(straight, tmp_path):
    cfg = str(straight / "cfg.yaml")
    out = tmp_path / "term"
    proc = subprocess.Popen([sys.executable, "-m", "simsiam", "pretrain", "--config", cfg,
                             "--out", str(out), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "metrics.jsonl").exists() and any(
                    r["kind"] == "step" and r["step"] >= 7 for r in read_metrics(out)):
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and "--resume" in err
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert 7 <= ckpt["step"] < EPOCHS * STEPS_PER_EPOCH
    assert ckpt["step"] == ckpt["epoch"] * STEPS_PER_EPOCH + ckpt["batch_in_epoch"]
    assert not (out / "backbone.safetensors").exists()
    rest = _cli("pretrain", "--config", cfg, "--out", str(out), "--resume", "--no-progress")
    assert rest.returncode == 0, rest.stderr
    assert _steps(out) == _steps(straight / "run")
    assert _max_diff(load_file(str(straight / "run" / "backbone.safetensors")),
                     load_file(str(out / "backbone.safetensors"))) <= 1e-6


def test_signal_mid_epoch_resumes_from_the_next_batch(straight, cifar_dir, tmp_path,
                                                      monkeypatch):
    """Deterministic: SIGTERM arrives during step 8 (epoch 2, batch 3 of 5)."""
    import simsiam.train.trainer as trainer

    real_step, calls = trainer.train_step, []

    def step_then_signal(*args, **kw):
        calls.append(1)
        if len(calls) == 8:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(*args, **kw)

    monkeypatch.setattr(trainer, "train_step", step_then_signal)
    cfg = _cfg(cifar_dir, tmp_path / "mid")
    with pytest.raises(RunInterrupted, match=r"step 8 \(epoch 2, batch 3/5\)"):
        pretrain(cfg, progress=False)
    ckpt = load_checkpoint(tmp_path / "mid" / "checkpoints" / "last.pt")
    assert (ckpt["epoch"], ckpt["batch_in_epoch"], ckpt["step"]) == (1, 3, 8)
    assert ckpt["partial"]["seen"] == 3 * 16
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    monkeypatch.setattr(trainer, "train_step", real_step)
    res = pretrain(cfg, resume=True, progress=False)
    assert res.steps == EPOCHS * STEPS_PER_EPOCH
    assert _steps(tmp_path / "mid") == _steps(straight / "run")
    assert _max_diff(load_file(str(straight / "run" / "backbone.safetensors")),
                     load_file(str(res.backbone_path))) <= 1e-6
    straight_loss = {r["epoch"]: r["loss"] for r in read_metrics(straight / "run")
                     if r["kind"] == "epoch"}
    assert res.epoch_loss == straight_loss  # the interrupted epoch's mean is whole


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
        cifar_dir, tmp_path, monkeypatch, capsys):
    from simsiam.methods.simsiam import SimSiam

    real_forward, calls = SimSiam.forward, []

    def forward_with_nan(self, views):
        calls.append(1)
        loss, metrics = real_forward(self, views)
        return (loss * float("nan") if len(calls) >= 7 else loss), metrics

    monkeypatch.setattr(SimSiam, "forward", forward_with_nan)
    (tmp_path / "cfg.yaml").write_text(config_to_yaml(_cfg(cifar_dir, tmp_path / "nan", **{
        "train.log_every": 4})))  # the NaN at step 7 is caught at the log step 8
    code = main(["pretrain", "--config", str(tmp_path / "cfg.yaml"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 3
    assert "NaN or infinite at step 7 (epoch 2)" in err
    assert "last good checkpoint" in err and "(epoch 1, step 5)" in err
    ckpt = load_checkpoint(tmp_path / "nan" / "checkpoints" / "last.pt")
    assert (ckpt["epoch"], ckpt["step"]) == (1, 5)
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert not (tmp_path / "nan" / "backbone.safetensors").exists()
    assert [r["step"] for r in read_metrics(tmp_path / "nan") if r["kind"] == "nonfinite"] == [7]


_WRITER = """
import sys, torch
from simsiam.train.checkpoint import save_checkpoint
path, k = sys.argv[1], 0
while True:
    save_checkpoint({"k": k, "w": torch.full((8_000_000,), float(k))}, path)
    if k == 0:
        print("first", flush=True)
    k += 1
"""


def test_sigkill_during_a_checkpoint_write_leaves_the_previous_one_loadable(tmp_path):
    path = tmp_path / "checkpoints" / "last.pt"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "first"
        tmp = path.with_name(f".last.pt.tmp-{proc.pid}")
        deadline = time.monotonic() + 60
        while not tmp.exists() and time.monotonic() < deadline:
            time.sleep(0.001)
        assert tmp.exists(), "never caught the writer mid-write"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    state = load_checkpoint(path)  # the last complete checkpoint, whole
    assert state["w"].shape == (8_000_000,)
    assert torch.equal(state["w"], torch.full_like(state["w"], float(state["k"])))
    assert tmp.exists()  # the killed write's leftover: the next write removes it
    save_checkpoint({"k": -1}, path)
    assert not tmp.exists() and load_checkpoint(path) == {"k": -1}


class _Payload:
    marker: str = ""

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('code ran')",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("fmt", ["torch-zip", "plain-pickle"])
def test_a_malicious_pickle_is_refused_and_never_runs(tmp_path, fmt, capsys):
    marker = tmp_path / "pwned.txt"
    payload = _Payload()
    payload.marker = str(marker)
    evil = tmp_path / "evil.pt"
    state = {"model": {"conv1.weight": torch.zeros(1)}, "extra": payload}
    if fmt == "torch-zip":
        torch.save(state, evil)
    else:
        evil.write_bytes(pickle.dumps(state))
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="never runs code"):
        load_checkpoint(evil)
    assert main(["knn", "--checkpoint", str(evil), "--data", str(tmp_path)]) == 2  # CLI too
    assert "never runs code" in capsys.readouterr().err
    assert not marker.exists()


def test_ten_images_with_batch_32_are_rejected_naming_both(cifar_dir, tmp_path):
    cfg = tiny_cfg(cifar_dir, tmp_path / "small", **{"data.per_class": 1})
    with pytest.raises(DataError, match=r"10 images, fewer than train.batch_size = 32"):
        pretrain(cfg, progress=False)
    assert not (tmp_path / "small").exists()  # rejected before anything was written


def test_paths_from_config_are_data_not_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tiny_cfg(Path("$(touch injected)"), tmp_path / "run")
    with pytest.raises(DataError, match=r"'\$\(touch injected\)' does not exist"):
        pretrain(cfg, progress=False)
    assert not (tmp_path / "injected").exists()


def test_signals_before_training_and_a_second_signal_stop_at_once(cifar_dir, tmp_path,
                                                                  monkeypatch):
    import simsiam.train.trainer as trainer

    # The handlers the test started with (SIG_IGN for SIGINT when run in the background)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    real_load = trainer.load_data

    def load_then_signal(*args, **kw):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the data are read
        return real_load(*args, **kw)

    monkeypatch.setattr(trainer, "load_data", load_then_signal)
    with pytest.raises(RunInterrupted, match="SIGINT before training started"):
        pretrain(_cfg(cifar_dir, tmp_path / "early"), progress=False)
    assert not (tmp_path / "early").exists()
    monkeypatch.setattr(trainer, "load_data", real_load)
    real_step, calls = trainer.train_step, []

    def step_then_two_signals(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(*args, **kw)

    monkeypatch.setattr(trainer, "train_step", step_then_two_signals)
    with pytest.raises(RunInterrupted, match="at once by a second SIGTERM") as err:
        pretrain(_cfg(cifar_dir, tmp_path / "twice"), progress=False)
    assert err.value.signum == signal.SIGTERM
    assert not (tmp_path / "twice" / "checkpoints" / "last.pt").exists()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_contradictory_run_flags_are_refused(cifar_dir, tmp_path):
    from simsiam.errors import ConfigError

    cfg = _cfg(cifar_dir, tmp_path / "r")
    with pytest.raises(ConfigError, match="give one of them"):
        pretrain(cfg, resume=True, overwrite=True, progress=False)
    with pytest.raises(ConfigError, match="from 1 to train.epochs = 10"):
        pretrain(cfg, stop_after_epoch=11, progress=False)
    assert not (tmp_path / "r").exists()


def test_nonfinite_weights_behind_a_finite_loss_stop_the_run_before_a_save(
        cifar_dir, tmp_path, monkeypatch, capsys):
    """A weight that never reaches the output (here the fc-less backbone's unused
    off-centre taps are simulated by poisoning layer4's first conv after step 7) keeps the
    loss finite; the check before the save at the end of epoch 2 catches it."""
    from simsiam.train import trainer

    real_step, calls = trainer.train_step, []

    def step_then_poison(model, optimizer, views, bf16):
        out = real_step(model, optimizer, views, bf16)
        calls.append(1)
        if len(calls) == 7:
            with torch.no_grad():
                model.backbone.layer4[0].conv1.weight[0, 0, 0, 0] = float("nan")
        return out

    monkeypatch.setattr(trainer, "train_step", step_then_poison)
    (tmp_path / "cfg.yaml").write_text(config_to_yaml(_cfg(cifar_dir, tmp_path / "w")))
    code = main(["pretrain", "--config", str(tmp_path / "cfg.yaml"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 3
    assert "hold NaN or infinite values after step 10 (epoch 2)" in err
    assert "'backbone.layer4.0.conv1.weight'" in err and "(epoch 1, step 5)" in err
    ckpt = load_checkpoint(tmp_path / "w" / "checkpoints" / "last.pt")
    assert (ckpt["epoch"], ckpt["step"]) == (1, 5)
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert not (tmp_path / "w" / "backbone.safetensors").exists()

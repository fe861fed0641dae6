"""Resource exhaustion ends a run with one line (exit code 6), and every printed resume
command pastes into a shell.

The out-of-memory run is a real child process under an RLIMIT_AS of 12 GiB whose first
step needs one 12 GiB tensor (batch 64 of 4096 px views): it cannot fit whatever else the
process holds, so the failure is deterministic. The killed worker is a real DataLoader
worker of a real run, SIGKILLed from here (as the out-of-memory killer would) once the
first checkpoint is on disk; the subprocess timeout is only a hang detector.
"""

from __future__ import annotations

import functools
import os
import re
import resource
import shlex
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch

from simsiam.cli import main
from simsiam.config import config_to_yaml, load_config
from simsiam.errors import CollapseError, ResourceError
from simsiam.launch import resume_command
from simsiam.train.checkpoint import Checkpointer, load_checkpoint
from simsiam.train.exhaustion import exhaustion_kind, resource_error
from simsiam.train.interrupt import stopped_message

from .test_pretrain_e2e import tiny_cfg

ODD = "my runs/it's a run"  # a space and a quote: both need quoting in a shell


def _after(text: str, marker: str) -> list[str]:
    """The command printed after ``marker`` on the line that holds it, as a shell reads it."""
    line = next(ln for ln in text.splitlines() if marker in ln)
    return shlex.split(line.split(marker, 1)[1])


def test_resume_command_gives_the_paths_back_through_a_shell(tmp_path):
    out = tmp_path / ODD
    words = shlex.split(resume_command(out))
    assert words == ["simsiam", "pretrain", "--config", str(out / "config.yaml"),
                     "--out", str(out), "--resume"]
    words = shlex.split(resume_command(out, "demo", ["--data", "../my data"]))
    assert words[1:] == ["demo", "--config", str(out / "config.yaml"), "--out", str(out),
                         "--data", "../my data", "--resume"]
    plain = resume_command(Path("runs/a"))  # nothing to quote: printed as before
    assert plain == "simsiam pretrain --config runs/a/config.yaml --out runs/a --resume"


def test_a_signal_stop_prints_a_quoted_resume_command(tmp_path):
    ckpt = types.SimpleNamespace(out=tmp_path / ODD,
                                 path=tmp_path / ODD / "checkpoints" / "last.pt")
    state = types.SimpleNamespace(step=8, epoch=1, batch_in_epoch=3)
    text = stopped_message("SIGTERM", state, 5, ckpt)
    assert text.startswith("stopped by SIGTERM at step 8 (epoch 2, batch 3/5); checkpoint "
                           f"saved to {ckpt.path}. Continue with: ")
    assert _after(text, "Continue with: ")[4:7] == ["--out", str(tmp_path / ODD), "--resume"]


def test_only_memory_and_killed_workers_are_read_as_exhaustion():
    with pytest.raises(RuntimeError) as real:  # the CPU allocator's own error: 1 PiB
        torch.empty(2**50, dtype=torch.uint8)
    assert exhaustion_kind(real.value) == "memory"
    assert exhaustion_kind(MemoryError()) == "memory"
    assert exhaustion_kind(torch.OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity")) == "memory"
    assert exhaustion_kind(RuntimeError(
        "DataLoader worker (pid 4242) is killed by signal: Killed. ")) == "worker"
    assert exhaustion_kind(RuntimeError(
        "DataLoader worker (pid(s) 4242, 4243) exited unexpectedly")) == "worker"
    for other in (RuntimeError("DataLoader worker (pid 4242) is killed by signal: "
                               "Segmentation fault. "),  # a crash, not a resource
                  RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 4x3)"),
                  CollapseError("collapsed"), ValueError("can't allocate memory"),
                  KeyboardInterrupt()):
        assert exhaustion_kind(other) is None, other


def _saved_checkpointer(out: Path) -> Checkpointer:
    ctx = types.SimpleNamespace(is_main=True, barrier=lambda: None)
    saver = Checkpointer(out, ctx)
    state = types.SimpleNamespace(epoch=2, step=20, batch_in_epoch=0, state_dict=lambda: {})
    model = torch.nn.Linear(2, 2)
    saver.save(state, model, torch.optim.SGD(model.parameters(), lr=0.1), None, {},
               torch.device("cpu"))
    return saver


def test_the_line_names_the_settings_the_checkpoint_and_the_resume_command(tmp_path):
    cfg = load_config(None, {"train.batch_size": 64, "data.image_size": 96,
                             "data.num_workers": 3})
    saver = _saved_checkpointer(tmp_path / ODD)
    with pytest.raises(RuntimeError) as real:
        torch.empty(2**50, dtype=torch.uint8)
    error = resource_error(real.value, cfg, 23, saver)
    text = str(error)
    assert isinstance(error, ResourceError) and "\n" not in text
    assert text.startswith("out of memory after step 23 (the allocator could not get "
                           "1048576.0 GiB more): lower train.batch_size = 64 or "
                           "data.image_size = 96 (a smaller batch or image size is a new run")
    assert f"the last checkpoint, {saver.path} (epoch 2, step 20), is kept" in text
    assert _after(text, "once memory is free: ")[2:] == [
        "--config", str(tmp_path / ODD / "config.yaml"), "--out", str(tmp_path / ODD),
        "--resume"]
    killed = RuntimeError("DataLoader worker (pid 4242) is killed by signal: Killed. ")
    text = str(resource_error(killed, cfg, 23, saver))
    assert text.startswith("a DataLoader worker (pid 4242) was killed by SIGKILL (the "
                           "kernel's out-of-memory killer sends it when memory runs out) "
                           "after step 23: lower data.num_workers = 3, or "
                           "train.batch_size = 64 or data.image_size = 96")
    assert _after(text, "continue with fewer workers: ")[5:] == [
        str(tmp_path / ODD), "--set", "data.num_workers=1", "--resume"]
    fresh = Checkpointer(tmp_path / "new", saver.ctx)  # nothing saved: nothing to resume
    assert str(resource_error(killed, cfg, 3, fresh)).endswith(
        "no checkpoint was written yet; run the command again with --set "
        "data.num_workers=1 and --overwrite")
    assert resource_error(ValueError("bad"), cfg, 3, saver) is None
    small = RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate "
                         "3145728 bytes. Error code 12 (Cannot allocate memory)")
    cuda = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 ...")
    assert str(resource_error(small, cfg, 3, saver)).startswith(
        "out of memory after step 3 (the allocator could not get 3.0 MiB more): lower")
    assert str(resource_error(cuda, cfg, 3, saver)).startswith(
        "out of memory after step 3 (the allocator could not get 2.00 GiB more): lower")


@pytest.mark.slow
def test_stop_after_epoch_prints_a_command_that_pastes_and_finishes_the_run(
        cifar_dir, tmp_path, capsys):
    out = tmp_path / ODD
    (tmp_path / "cfg.yaml").write_text(config_to_yaml(tiny_cfg(
        cifar_dir, out, **{"data.per_class": 4, "data.test_per_class": 2,
                           "train.batch_size": 20, "train.epochs": 2,
                           "eval.knn_at_start": False, "eval.knn_every": 0})))
    assert main(["pretrain", "--config", str(tmp_path / "cfg.yaml"), "--stop-after-epoch",
                 "1", "--no-progress"]) == 0
    words = _after(capsys.readouterr().out, "continue with: ")
    assert words[:2] == ["simsiam", "pretrain"] and words[words.index("--out") + 1] == str(out)
    assert main([*words[1:], "--no-progress"]) == 0  # the printed command, as a shell splits it
    assert "pretrain: 2 epochs, 4 steps" in capsys.readouterr().out


def _limit_memory(nbytes: int) -> functools.partial:
    """A ``preexec_fn``: the child's address space limited to ``nbytes`` (RLIMIT_AS)."""
    return functools.partial(resource.setrlimit, resource.RLIMIT_AS, (nbytes, nbytes))


@pytest.mark.slow
@pytest.mark.parametrize("where", ["step", "monitor"])
def test_out_of_memory_ends_with_one_line_naming_the_settings(cifar_dir, tmp_path, where):
    """The first step's views (64 x 3 x 4096 x 4096 float32, 12.0 GiB) or, with the kNN
    monitor at the start, the monitor's batch of the 70 training images (13.1 GiB) cannot
    fit under a 12 GiB address space."""
    out = tmp_path / ODD
    proc = subprocess.run(
        [sys.executable, "-m", "simsiam", "pretrain", "--config", "demo-cpu", "--data",
         str(cifar_dir), "--out", str(out), "--per-class", "7", "--batch-size", "64",
         "--epochs", "2", "--no-progress", "--set", "data.image_size=4096",
         "--set", "data.test_per_class=1", "--set", "augment.compile=false",
         "--set", f"eval.knn_at_start={where == 'monitor'}", "--set", "eval.knn_every=0"],
        capture_output=True, text=True, timeout=300, preexec_fn=_limit_memory(12 << 30))
    assert proc.returncode == 6, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if "out of resources" in ln]
    assert len(lines) == 1, proc.stderr
    first = {"step": "out of memory after step 0 (the allocator could not get 12.0 GiB "
                     "more): lower train.batch_size = 64 or data.image_size = 4096",
             "monitor": "out of memory in the kNN monitor after step 0 (the allocator could "
                        "not get 13.1 GiB more): lower eval.batch_size = 512 (its batch), or "
                        "train.batch_size = 64 or data.image_size = 4096"}[where]
    assert lines[0].startswith(f"simsiam pretrain: out of resources: {first}"), lines[0]
    assert lines[0].endswith("no checkpoint was written yet; run the command again with "
                             + {"step": "smaller values and --overwrite",
                                "monitor": "--set eval.batch_size=N (smaller) and "
                                           "--overwrite"}[where])
    assert (out / "config.yaml").is_file() and not (out / "checkpoints" / "last.pt").exists()


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` and that run its command line (DataLoader
    workers are forks of it), from /proc."""
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            same = (entry / "cmdline").read_bytes() == cmdline
        except (OSError, ValueError, IndexError):
            continue  # ended meanwhile
        if ppid == pid and same:
            found.append(int(entry.name))
    return sorted(found)


@pytest.mark.slow
def test_a_killed_dataloader_worker_ends_the_run_naming_num_workers(cifar_dir, tmp_path):
    out = tmp_path / ODD
    (tmp_path / "cfg.yaml").write_text(config_to_yaml(tiny_cfg(
        cifar_dir, out, **{"data.per_class": 16, "data.test_per_class": 2,
                           "train.batch_size": 16, "train.epochs": 3,
                           "augment.backend": "per_image", "data.num_workers": 2,
                           "eval.knn_at_start": False, "eval.knn_every": 0})))
    proc = subprocess.Popen([sys.executable, "-m", "simsiam", "pretrain", "--config",
                             str(tmp_path / "cfg.yaml"), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = out / "checkpoints" / "last.pt"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None and not last.exists():
            time.sleep(0.02)
        workers = _children(proc.pid)
        assert proc.poll() is None and len(workers) == 2, "no run with two workers to kill"
        os.kill(workers[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=120)  # a hang detector, not a timing
    finally:
        proc.kill()
    assert proc.returncode == 6, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if "out of resources" in ln]
    assert len(lines) == 1, err
    kept = load_checkpoint(last)
    # torch's SIGCHLD handler names the signal; when its queue check sees the worker gone
    # first (it reaps it: timing), only that it ended
    assert re.match(rf"simsiam pretrain: out of resources: (a DataLoader worker \(pid "
                    rf"{workers[0]}\) was killed by SIGKILL|DataLoader worker\(s\) \(pid "
                    rf"{workers[0]}\) ended unexpectedly)", lines[0]), lines[0]
    assert ("lower data.num_workers = 2, or train.batch_size = 16 or data.image_size = 32"
            in lines[0])
    assert f"(epoch {kept['epoch']}, step {kept['step']}), is kept" in lines[0]
    assert kept["epoch"] >= 1 and not (out / "backbone.safetensors").exists()
    words = _after(lines[0], "continue with fewer workers: ")
    assert words[words.index("--out") + 1] == str(out)
    assert words[words.index("--config") + 1] == str(out / "config.yaml")
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)  # none left behind
    rest = subprocess.run([sys.executable, "-m", "simsiam", *words[1:], "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert rest.returncode == 0, rest.stderr
    assert "pretrain: 3 epochs, 30 steps" in rest.stdout


class _BrokenPipeBatch(dict):
    """A batch whose reading raises what a worker dying mid-transfer gives the receiver."""

    def __iter__(self):
        raise EOFError("Ran out of input")

    def keys(self):
        raise EOFError("Ran out of input")


def test_a_worker_dying_while_it_passes_a_batch_and_onednn_out_of_memory_are_read(tmp_path):
    """Two forms found by trying it (issue 29's fresh-user trial): multiprocessing's
    EOFError when a worker died while a batch was passed, and oneDNN's words under
    `prlimit --as`. An EOFError elsewhere stays a plain error."""
    from torch.utils.data import default_collate

    with pytest.raises(EOFError) as broken:
        default_collate([_BrokenPipeBatch(a=1)])
    assert exhaustion_kind(broken.value) == "worker"
    assert exhaustion_kind(EOFError("not from a loader")) is None
    cfg = load_config(None, {"train.batch_size": 96, "data.image_size": 128,
                             "data.num_workers": 2})
    saver = _saved_checkpointer(tmp_path / "run")
    assert str(resource_error(broken.value, cfg, 7, saver)).startswith(
        "a DataLoader worker ended while it passed a batch (as when the kernel's "
        "out-of-memory killer ends one) after step 7: lower data.num_workers = 2")
    onednn = RuntimeError("could not create a primitive")
    assert exhaustion_kind(onednn) == "memory"
    assert str(resource_error(onednn, cfg, 0, saver)).startswith(
        "out of memory after step 0: lower train.batch_size = 96 or data.image_size = 128 "
        "(torch: 'could not create a primitive')")


def test_out_of_memory_in_the_monitor_keeps_the_epoch_just_trained(cifar_dir, tmp_path,
                                                                    monkeypatch):
    """The monitor runs before the end-of-epoch checkpoint: when it runs out of memory the
    epoch's training is saved first, and the line names that checkpoint."""
    from simsiam.eval.monitor import Monitor
    from simsiam.train.trainer import pretrain

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to "
                           "allocate 3145728 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(Monitor, "run", out_of_memory)
    cfg = tiny_cfg(cifar_dir, tmp_path / "run", **{"train.epochs": 2, "eval.knn_every": 1,
                                                   "eval.knn_at_start": False})
    with pytest.raises(ResourceError, match=r"out of memory after step 5 .*: lower "
                       r"train.batch_size = 32 .*\(epoch 1, step 5\), is kept"):
        pretrain(cfg, progress=False)
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["epoch"] == 1

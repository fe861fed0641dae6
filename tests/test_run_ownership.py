"""A run directory is owned, checked and kept (issue 29): a lock held by a live run, the
folders a run writes tested before any decode, ``--overwrite`` clearing last, ``--resume``
refusing changed data, and a torn last line of ``metrics.jsonl`` skipped with a warning.

Real files throughout: a lock held by another process, a read-only folder (a read-only
tmpfs as root, a chmod'ed folder otherwise), real CIFAR-10 JPEGs copied into a folder that
then gains images. Every refusal is checked to leave the user's files byte-identical.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from simsiam.cli import main
from simsiam.config import config_to_yaml
from simsiam.errors import ConfigError, DataWarning
from simsiam.fileio import check_writable, read_jsonl
from simsiam.train.logger import read_metrics
from simsiam.train.run_lock import RunLock, check_not_in_use
from simsiam.train.trainer import pretrain

from .test_pretrain_e2e import tiny_cfg

TINY = ["--config", "cifar10", "--set", "data.image_size=32", "--set", "model.backbone=resnet18",
        "--set", "model.simsiam.proj_layers=2", "--set", "model.simsiam.proj_hidden_dim=64",
        "--set", "model.simsiam.dim=64", "--set", "model.simsiam.pred_hidden_dim=16",
        "--set", "data.num_workers=0", "--set", "eval.knn_k=5", "--set", "train.log_every=1",
        "--set", "data.holdout_fraction=0.25", "--set", "eval.knn_at_start=false"]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _fake_run(out: Path, cfg) -> dict[str, bytes]:
    """A run directory's files as a user has them (config, metrics, a checkpoint file)."""
    (out / "checkpoints").mkdir(parents=True)
    (out / "config.yaml").write_text(config_to_yaml(cfg), encoding="utf-8")
    (out / "metrics.jsonl").write_text('{"kind": "setup", "step": 0}\n', encoding="utf-8")
    (out / "checkpoints" / "last.pt").write_bytes(b"weights the user trained for days")
    return _snapshot(out)


HOLDER = ("import sys, time; from simsiam.train.run_lock import RunLock; "
          "RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(120)")


@pytest.fixture()
def held(tmp_path):
    """A run directory whose lock another live process holds; yields (dir, pid)."""
    out = tmp_path / "run dir"
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE,
                            text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield out, proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_a_live_run_holds_its_directory(held, cifar_dir, capsys):
    out, pid = held
    cfg = tiny_cfg(cifar_dir, out)
    before = _fake_run(out, cfg)
    assert f"pid={pid}" in (out / "run.lock").read_text()
    for flag in ("--overwrite", "--resume"):
        code = main(["pretrain", "--data", str(cifar_dir), "--out", str(out), flag, *TINY])
        err = capsys.readouterr().err
        assert code == 2, err
        assert f"output directory '{out}' is in use by a run that is still going" in err
        assert f"pid={pid}" in err and "choose another --out" in err
    with pytest.raises(ConfigError, match=f"in use .*pid={pid}"):  # the library, too
        pretrain(cfg, overwrite=True, progress=False)
    assert _snapshot(out) == before  # nothing of the live run was touched


def test_a_dead_holder_leaves_no_lock(held, cifar_dir):
    out, pid = held
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    assert (out / "run.lock").exists()  # a stale file: the OS dropped the lock itself
    check_not_in_use(out)  # no refusal
    with RunLock(out) as lock:
        assert f"pid={os.getpid()}" in lock.path.read_text()
    assert not (out / "run.lock").exists()


def test_a_refused_lock_leaves_no_folder(tmp_path):
    out = tmp_path / "new" / "run"
    with RunLock(out):
        with pytest.raises(ConfigError, match="in use"):
            RunLock(out).acquire()  # flock: a second open file in one process is refused too
    assert not out.exists() or not any(out.iterdir())


@pytest.fixture()
def readonly_dir(tmp_path):
    """A folder that cannot be written: a read-only tmpfs as root (chmod does not stop root),
    a chmod 555 folder otherwise."""
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "decoded").mkdir()  # a cache that already holds decoded images
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"root, and a read-only tmpfs cannot be mounted here: {done.stderr}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_folder_that_cannot_be_written_is_named_before_any_decode(readonly_dir, cifar_dir,
                                                                   capsys):
    why = "read-only file system" if os.geteuid() == 0 else "permission denied"
    with pytest.raises(ConfigError, match=f"--out '{readonly_dir}/run' cannot be written: {why}"):
        check_writable(readonly_dir / "run", "--out", "choose another --out")
    code = main(["pretrain", "--data", str(cifar_dir), "--out", str(readonly_dir / "run"),
                 *TINY])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert f"--out (train.out) '{readonly_dir}/run' cannot be written: {why}" in err
    code = main(["pretrain", "--data", str(cifar_dir), "--out", str(readonly_dir.parent / "ok"),
                 "--set", f"data.cache_dir={readonly_dir}", *TINY])
    err = capsys.readouterr().err
    assert code == 2 and f"data.cache_dir '{readonly_dir}' cannot be written: {why}" in err
    assert not (readonly_dir.parent / "ok").exists()  # refused before anything was made
    ckpt = readonly_dir.parent / "backbone.safetensors"  # never read: refused before
    ckpt.write_bytes(b"x")
    for argv, what in (
            (["embed", "--checkpoint", str(ckpt), "--data", str(cifar_dir), "--out",
              str(readonly_dir / "f.npz")], "--out"),
            (["neighbors", "--checkpoint", str(ckpt), "--data", str(cifar_dir), "--query-all",
              "--out", str(readonly_dir / "n.csv")], "--out"),
            (["report", str(readonly_dir)], "the report folder")):
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1, err
        assert f"{what} '{readonly_dir}" in err and f"cannot be written: {why}" in err


def test_a_file_in_the_way_is_named(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match=r"'.*/f' is a file; choose"):
        check_writable(tmp_path / "f" / "run", "--out", "choose another --out")


def test_overwrite_clears_last_a_refused_run_keeps_the_old_one(cifar_dir, tmp_path, capsys):
    """CLIP on an image folder (no captions) is refused after the data and the model are
    built: the old run in --out must still be there, byte for byte."""
    out = tmp_path / "run"
    before = _fake_run(out, tiny_cfg(cifar_dir, out))
    code = main(["pretrain", "--method", "clip", "--data", str(cifar_dir), "--out", str(out),
                 "--overwrite", "--per-class", "4", "--config", "clip-cpu",
                 "--set", "data.test_per_class=2",
                 "--set", "data.image_size=32", "--set", "model.backbone=resnet18"])
    err = capsys.readouterr().err
    assert code == 2 and "learns from captions" in err and "has none" in err, err
    assert _snapshot(out) == before


def _photo_folder(cifar_dir: Path, root: Path, per_class: int, start: int = 0) -> None:
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for src in sorted((cifar_dir / "train" / name).iterdir())[start:start + per_class]:
            shutil.copy(src, root / name / src.name)


def _held_names(out: Path) -> set[str]:
    return {n for n, _ in json.loads((out / "data.json").read_text())["test"]["files"]}


@pytest.mark.slow
def test_resume_refuses_changed_data_and_keeps_the_split(cifar_dir, tmp_path, capsys):
    data, out = tmp_path / "my photos", tmp_path / "run"
    _photo_folder(cifar_dir, data, 16)
    args = ["pretrain", "--data", str(data), "--out", str(out), "--epochs", "2",
            "--batch-size", "8", "--no-progress", *TINY]
    assert main([*args, "--stop-after-epoch", "1"]) == 0
    capsys.readouterr()
    held = _held_names(out)
    assert len(held) == 8  # a quarter of 2 x 16
    with open(out / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"kind": "step", "step": 9, "lo')  # a crash in mid-line
    _photo_folder(cifar_dir, data, 4, start=16)  # the user adds 8 photos
    kept = _snapshot(out)
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err
    assert (f"--resume: the data of the run in '{out}' changed since it started (train: 24 "
            "-> 32 images, 8 added (e.g.") in err
    assert "pass --allow-changed-data" in err and err.count("\n") == 1
    assert _snapshot(out) == kept
    assert main([*args, "--resume", "--allow-changed-data"]) == 0
    err = capsys.readouterr().err
    assert "its last line (" in err and "was cut short" in err
    assert "continuing on changed data (train: 24 -> 32 images, 8 added" in err
    assert _held_names(out) == held  # the held-out split did not move
    records, torn = read_jsonl(out / "metrics.jsonl")
    assert torn is None  # the torn line was dropped on resume, and nothing else
    epochs = [r["epoch"] for r in records if r["kind"] == "epoch"]
    assert epochs == [1, 2]
    with open(out / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"kind": "ev')
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert len(read_metrics(out)) == len(records)
    assert [type(w.message) for w in seen] == [DataWarning]
    assert main(["report", str(out)]) == 0
    assert "was cut short" in capsys.readouterr().err


def test_a_damaged_line_before_the_last_is_refused(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"ste\n{"step": 2}\n')
    with pytest.raises(ConfigError, match="metrics.jsonl' line 2 is not a JSON record"):
        read_metrics(tmp_path)


def test_allow_changed_data_needs_resume(cifar_dir, tmp_path, capsys):
    code = main(["pretrain", "--data", str(cifar_dir), "--out", str(tmp_path / "r"),
                 "--allow-changed-data", *TINY])
    assert code == 2 and "--allow-changed-data goes with --resume" in capsys.readouterr().err


def test_a_data_folder_whose_own_name_is_not_utf8_is_refused_naming_it(tmp_path, capsys):
    """config.yaml records data.source; a name in Latin-1 could not be read back from it."""
    folder = os.fsencode(tmp_path) + b"/caf\xe9"
    os.makedirs(folder)
    name = os.fsdecode(folder)  # surrogate-escaped, as Python hands it to us
    code = main(["pretrain", "--data", name, "--out", str(tmp_path / "run"), *TINY])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert f"data.source = '{tmp_path}/caf\\xe9' is not valid UTF-8" in err
    assert "rename that folder" in err and not (tmp_path / "run").exists()

"""A full disk (issue 18, kind 4): every write the product makes ends in one short error
naming the path and "no space left on device" (exit code 5), the file that was there is
unchanged, no temporary file is left, and a checkpoint's error says what is kept and how
to resume."""

from __future__ import annotations

import errno
import json
import types

import pytest
import torch

from simsiam import fileio
from simsiam.errors import DiskFullError


def _enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_write_that_does_not_fit_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")

    def half_then_full(tmp):
        tmp.write_text("partial")
        _enospc()

    with pytest.raises(DiskFullError, match=r"no space left on device writing '.*out.json'.*"
                                            r"the file already there is unchanged"):
        fileio.atomic_write(target, half_then_full)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    with pytest.raises(DiskFullError, match="nothing was written there"):
        fileio.atomic_write(tmp_path / "new.npz", _enospc)
    assert not (tmp_path / "new.npz").exists()


def test_safetensors_io_error_is_read_as_a_full_disk(tmp_path):
    def safetensors_failure(tmp):
        raise RuntimeError("Error while serializing: I/O error: No space left on device "
                           "(os error 28)")  # SafetensorError's text

    with pytest.raises(DiskFullError, match=r"writing '.*backbone.safetensors'"):
        fileio.atomic_write(tmp_path / "backbone.safetensors", safetensors_failure)


def test_torch_saves_cryptic_error_is_read_as_a_full_disk_only_when_it_is(tmp_path,
                                                                        monkeypatch):
    def torch_failure(tmp):
        try:
            raise RuntimeError("[enforce fail at inline_container.cc:858] . PytorchStreamWriter "
                               "failed writing file data/0: file write failed")
        except RuntimeError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos "
                               "45223744 vs 45223632") from None

    usage = types.SimpleNamespace(total=10 << 30, used=0, free=1 << 20)
    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda _p: usage)
    with pytest.raises(DiskFullError, match=r"writing '.*last.pt': nothing was written"):
        fileio.atomic_write(tmp_path / "last.pt", torch_failure)
    usage.free = 50 << 30  # plenty of room: not a full disk, the original error stands
    with pytest.raises(RuntimeError, match="unexpected pos"):
        fileio.atomic_write(tmp_path / "last.pt", torch_failure)
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_that_does_not_fit_names_the_kept_one_and_the_resume_command(tmp_path,
                                                                                monkeypatch):
    from simsiam.train import checkpoint as ck

    ctx = types.SimpleNamespace(is_main=True, barrier=lambda: None)
    saver = ck.Checkpointer(tmp_path, ctx)
    state = types.SimpleNamespace(epoch=2, step=20, batch_in_epoch=0, state_dict=lambda: {})
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    saver.save(state, model, opt, None, {}, torch.device("cpu"))
    before = saver.path.read_bytes()
    monkeypatch.setattr(ck, "atomic_write", lambda path, write: (_ for _ in ()).throw(
        fileio.disk_full_error(path)))
    state.epoch, state.step = 3, 30
    with pytest.raises(DiskFullError) as err:
        saver.save(state, model, opt, None, {}, torch.device("cpu"))
    text = str(err.value)
    assert "no space left on device writing" in text and "stopped at epoch 3, step 30" in text
    assert "(epoch 2, step 20), is kept" in text
    assert f"--config {tmp_path / 'config.yaml'} --out {tmp_path} --resume" in text
    assert saver.path.read_bytes() == before and saver.last_saved == (2, 20)
    fresh = ck.Checkpointer(tmp_path / "new", ctx)  # nothing saved yet: no resume to offer
    with pytest.raises(DiskFullError, match=r"no checkpoint was written yet; after freeing "
                                            r"space start it again with the same command and "
                                            r"--overwrite"):
        fresh.save(state, model, opt, None, {}, torch.device("cpu"))


def test_metrics_keep_whole_lines_when_the_disk_fills_mid_record(tmp_path):
    from simsiam.train.logger import MetricsLogger, read_metrics

    log = MetricsLogger(tmp_path, tensorboard=False)
    log.log({"kind": "step", "step": 1, "loss": 0.5})

    real = log._file

    class FillsUp:  # writes half the line to disk, then the disk is full
        def write(self, text):
            real.write(text[: len(text) // 2])
            real.flush()

        def flush(self):
            _enospc()

        def tell(self):
            return real.tell()

        def close(self):
            real.close()

    log._file = FillsUp()
    with pytest.raises(DiskFullError, match="metrics.jsonl"):
        log.log({"kind": "step", "step": 2, "loss": 0.4})
    assert [r["step"] for r in read_metrics(tmp_path)] == [1]
    log.log({"kind": "step", "step": 3, "loss": 0.3})  # space freed: appends go on
    log.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 3]


def test_the_decoded_cache_reserves_its_space_before_writing(tmp_path, monkeypatch):
    from simsiam.data import cache

    tmp = tmp_path / "k.npy.tmp-1"
    tmp.write_bytes(b"\0" * 100)
    monkeypatch.setattr(fileio.os, "posix_fallocate", _enospc)
    with pytest.raises(DiskFullError, match=r"writing '.*k.npy'.*SIMSIAM_CACHE_DIR"):
        fileio.reserve_space(tmp, tmp_path / "k.npy", cache.CACHE_ELSEWHERE)
    assert not tmp.exists()


def test_a_full_disk_exits_with_code_5(monkeypatch, capsys):
    from simsiam import cli

    def full(_args):
        raise fileio.disk_full_error(fileio.Path("/runs/x/metrics.jsonl"))

    parser = types.SimpleNamespace(parse_args=lambda _argv: types.SimpleNamespace(
        func=full, command="pretrain"))
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    assert cli.main(["pretrain"]) == 5
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no space left on device" in err and "Traceback" not in err

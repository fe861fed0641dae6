"""WebDataset shards as image data for every method: ``simsiam shard``, labels and splits
kept, rank x worker reading, damaged members (simsiam.data.shard_writer, shard_images)."""

from __future__ import annotations

import io
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from simsiam.augment.batched import BatchedViewAugment
from simsiam.cli import main as cli_main
from simsiam.config import AugmentConfig, DataConfig
from simsiam.data.dataset import load_data
from simsiam.data.shard_writer import write_shards
from simsiam.data.stream import FileImages, StreamViewLoader
from simsiam.errors import DataError, DataWarning

CLASSES = ("cat", "dog", "ship")


def _folder(root: Path) -> Path:
    """train/{cat,dog,ship} with 4 JPEGs each (sizes vary), test/ with 1 each; each image's
    colour codes its class (red, green, blue) so labels can be checked from pixels."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("test", 1)):
        for c, name in enumerate(CLASSES):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):  # noise: the pixel data is most of the file
                a = rng.integers(0, 40, (40 + 5 * i, 50 + 3 * i, 3), dtype=np.uint8)
                a[..., c] += 160
                Image.fromarray(a).save(d / f"{i}.jpg", quality=95)
    return root


def _cfg(pattern: str, **kw) -> DataConfig:
    return DataConfig(source=pattern, image_size=16, cache_dir=kw.pop("cache_dir"), **kw)


def test_shard_command_keeps_labels_and_splits(tmp_path, capsys):
    folder = _folder(tmp_path / "pets")
    assert cli_main(["shard", str(folder), str(tmp_path / "out"), "--shard-size", "5",
                     "--no-progress"]) == 0
    printed = capsys.readouterr().out
    pattern = str(tmp_path / "out" / "shard-{000000..000003}.tar")
    assert "15 images (12 train, 3 test) in 4 shards" in printed and pattern in printed
    splits = load_data(_cfg(pattern, cache_dir=str(tmp_path / "c")), progress=False)
    assert splits.train.classes == list(CLASSES) and len(splits.train) == 12
    assert splits.test is not None and len(splits.test) == 3 and splits.test_found == 3
    for s in (splits.train, splits.test):  # the colour of each image is its label's
        colour = np.asarray(s.images).reshape(len(s), -1, 3).mean(axis=1).argmax(axis=1)
        assert np.array_equal(colour, s.labels)
    # nothing is replaced: a second run into the same folder stops before writing
    with pytest.raises(DataError, match="already exists"):
        write_shards(folder, tmp_path / "out", 5, progress=False)


def test_two_ranks_of_two_workers_see_every_image_once_with_its_label(tmp_path):
    folder = _folder(tmp_path / "pets")
    res = write_shards(folder, tmp_path / "out", 5, progress=False)
    cfg = _cfg(res.pattern, cache_dir=str(tmp_path / "c"), pipeline="stream")
    splits = load_data(cfg, pipeline="stream", progress=False)
    train = splits.train
    assert splits.pipeline == "stream" and isinstance(train.images, FileImages)
    aug = BatchedViewAugment(AugmentConfig(recipe="simsiam"), 16)
    for epoch in (0, 1):
        seen = []
        for rank in (0, 1):  # global batch 4: 2 images per rank, 3 steps cover all 12
            loader = StreamViewLoader(train.images.sources, train.images.names, aug, 2, 0,
                                      torch.device("cpu"), num_workers=2, rank=rank,
                                      world_size=2)
            loader.sampler.set_epoch(epoch)
            for x1, _, index in loader:
                assert x1.shape == (2, 3, 16, 16)
                seen += index.tolist()
        assert sorted(seen) == list(range(12)), (epoch, seen)
    colour = np.asarray(train.images[:]).reshape(12, -1, 3).mean(axis=1).argmax(axis=1)
    assert np.array_equal(colour, train.labels)  # labels of the streamed samples


def _damage(shard: Path, key: str, keep: float) -> None:
    """Rewrite ``shard`` with member ``key``.jpg cut to ``keep`` of its bytes."""
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar if m.isreg()]
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        for m, data in members:
            if m.name == f"{key}.jpg":
                data = data[: int(len(data) * keep)]
            m.size = len(data)
            tar.addfile(m, io.BytesIO(data))


def test_a_damaged_shard_member_is_handled_as_a_bad_image_file(tmp_path):
    folder = _folder(tmp_path / "pets")
    res = write_shards(folder, tmp_path / "out", 5, progress=False)
    _damage(res.shards[0], "00000001", 0.5)  # header reads, pixels cut: found by the stream
    _damage(res.shards[0], "00000002", 0.0)  # empty: found when indexed
    cfg = _cfg(res.pattern, cache_dir=str(tmp_path / "c"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = load_data(cfg, pipeline="stream", progress=False)
    assert splits.skipped == 1 and len(splits.train) == 11
    assert any("shard-000000.tar/00000002" in str(w.message) for w in caught)
    aug = BatchedViewAugment(AugmentConfig(recipe="simsiam"), 16)
    train = splits.train
    loader = StreamViewLoader(train.images.sources, train.images.names, aug, 11, 0,
                              torch.device("cpu"), num_workers=0)
    loader.sampler.set_epoch(0)
    with pytest.warns(DataWarning, match="shard-000000.tar/00000001"):
        (x1, _, index), = list(loader)
    assert x1.shape[0] == 11 and len(set(index.tolist())) == 10  # replaced by the next image
    strict = StreamViewLoader(train.images.sources, train.images.names, aug, 11, 0,
                              torch.device("cpu"), num_workers=0, strict=True)
    strict.sampler.set_epoch(0)
    with pytest.raises(DataError, match="shard-000000.tar/00000001"):
        list(strict)
    with pytest.raises(DataError, match="shard-000000.tar/00000002"):
        load_data(_cfg(res.pattern, cache_dir=str(tmp_path / "c"), strict=True),
                  pipeline="stream", progress=False)
    # the cache path skips the damaged members too
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cached = load_data(cfg, pipeline="cache", progress=False)
    assert cached.pipeline == "cache" and len(cached.train) == 10


def test_shard_refuses_what_pretraining_refuses_and_names_its_own_arguments(tmp_path):
    folder = _folder(tmp_path / "pets")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DataError, match="OUT '.*afile' is a file, not a folder"):
        write_shards(folder, tmp_path / "afile", 5, progress=False)
    with pytest.raises(DataError, match="FOLDER '.*nope' is not a folder"):
        write_shards(tmp_path / "nope", tmp_path / "o", 5, progress=False)
    (folder / "test" / "ship").rename(folder / "test" / "boat")  # names differ: refused
    with pytest.raises(DataError, match="class folders of .* differ"):
        write_shards(folder, tmp_path / "o", 5, progress=False)
    assert not (tmp_path / "o").exists()


def test_a_pattern_of_test_samples_only_says_so(tmp_path):
    folder = _folder(tmp_path / "pets")
    res = write_shards(folder, tmp_path / "out", 5, progress=False)
    last = str(res.shards[-1])  # the 3 held-out samples
    with pytest.raises(DataError, match='all 3 samples are marked "split": "test"'):
        load_data(_cfg(last, cache_dir=str(tmp_path / "c")), progress=False)


def test_sequential_runs_deal_whole_batches_and_resume_in_the_dataloaders_order():
    from simsiam.data.shard_stream import delivered, schedule, worker_batches

    assert worker_batches(7, 2) == [4, 3] and worker_batches(3, 4) == [1, 1, 1, 0]
    assert schedule([2, 1]) == [(0, 0), (1, 0), (0, 1)]
    assert delivered([4, 3], 5) == [3, 2]
    assert delivered([4, 1], 4) == [3, 1]  # worker 1 ran out: worker 0 goes on alone
    assert delivered([2, 2], 0) == [0, 0]


def _sequential(train, rank: int, workers: int, buffer: int = 4):
    from simsiam.data.shard_stream import ShardStreamLoader, shard_runs_of

    aug = BatchedViewAugment(AugmentConfig(recipe="simsiam"), 16)
    return ShardStreamLoader(shard_runs_of(train.images.sources), train.images.names, aug, 2,
                             0, torch.device("cpu"), num_workers=workers, rank=rank,
                             world_size=2, buffer=buffer)


def test_sequential_shard_reading_over_two_ranks_of_two_workers_sees_each_image_once(tmp_path):
    folder = _folder(tmp_path / "pets")
    res = write_shards(folder, tmp_path / "out", 5, progress=False)
    train = load_data(_cfg(res.pattern, cache_dir=str(tmp_path / "c")), pipeline="stream",
                      progress=False).train
    orders = []
    for epoch in (0, 1):
        seen = []
        for rank in (0, 1):  # global batch 4: 3 steps per rank, worker runs of 2 + 1 batches
            loader = _sequential(train, rank, workers=2)
            loader.sampler.set_epoch(epoch)
            batches = list(loader)
            assert len(batches) == len(loader) == 3
            assert all(b[0].shape == (2, 3, 16, 16) for b in batches)
            seen += [i for b in batches for i in b[-1].tolist()]
        assert sorted(seen) == list(range(12)), (epoch, seen)
        orders.append(seen)
    assert orders[0] != orders[1]  # a new shard order and shuffle each epoch
    colour = np.asarray(train.images[:]).reshape(12, -1, 3).mean(axis=1).argmax(axis=1)
    assert np.array_equal(colour, train.labels)
    # resumed after one step of epoch 1 on rank 0: the same remaining batches
    whole = list(_with_epoch(_sequential(train, 0, workers=2), 1, 0))
    rest = list(_with_epoch(_sequential(train, 0, workers=2), 1, 4))
    assert len(rest) == 2
    for a, b in zip(rest, whole[1:], strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def _with_epoch(loader, epoch: int, start: int):
    loader.sampler.set_epoch(epoch, start)
    return loader

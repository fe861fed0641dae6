"""WebDataset shards that webdataset's grouping would read wrongly, and shards cut short:
refused before any work with a DataError naming the shard, the files, the counts and the
fix, on the caption (CLIP) path and the image path alike (simsiam.data.shard_tar).

Every shard here is a real tar written with Python's tarfile, holding real JPEGs."""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from simsiam.augment.batched import BatchedViewAugment
from simsiam.cli import main as cli_main
from simsiam.config import AugmentConfig, DataConfig
from simsiam.data.captions import load_caption_data
from simsiam.data.dataset import load_data
from simsiam.data.stream import StreamViewLoader
from simsiam.errors import DataError, DataWarning

SORT_FIX = "`tar --sort=name -cf s.tar -C FOLDER .`"


def _jpeg(seed: int) -> bytes:
    """A real 24x20 JPEG of noise (decodable, distinct per seed)."""
    a = np.random.default_rng(seed).integers(0, 255, (20, 24, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A tar holding ``members`` (name, bytes) in the order given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _pairs(keys: list[str], second: str = "txt") -> list[list[tuple[str, bytes]]]:
    """Per key its image and its caption (``txt``) or class label (``cls``)."""
    return [[(f"{k}.jpg", _jpeg(i)),
             (f"{k}.{second}", f"photo {k}".encode() if second == "txt" else b"0")]
            for i, k in enumerate(keys)]


def _captions(source: Path, tmp_path: Path, **kw):
    kw.setdefault("holdout_fraction", 0.0)
    return load_caption_data(DataConfig(source=str(source), image_size=16,
                                        cache_dir=str(tmp_path / "cache"), **kw), progress=False)


def _images(source: Path, tmp_path: Path, pipeline: str = "cache"):
    cfg = DataConfig(source=str(source), image_size=16, cache_dir=str(tmp_path / "cache"),
                     holdout_fraction=0.0)
    return load_data(cfg, pipeline=pipeline, progress=False)


def _pretrain(capsys, source: Path, out: Path, config: str) -> tuple[int, list[str]]:
    code = cli_main(["pretrain", "--config", config, "--data", str(source), "--out", str(out),
                     "--epochs", "8", "--no-progress"])
    return code, capsys.readouterr().err.strip().splitlines()


def test_members_of_a_sample_that_are_not_adjacent_are_refused_naming_a_key_and_the_fix(
        tmp_path, capsys):
    keys = [f"{k:03d}" for k in range(10)]
    for second, load in (("txt", _captions), ("cls", _images)):  # CLIP path, image path
        pairs = _pairs(keys, second)
        # as `tar cf s.tar *.jpg *.txt` writes it: every image, then every caption
        shard = _tar(tmp_path / second / "s.tar", [p[0] for p in pairs] + [p[1] for p in pairs])
        with pytest.raises(DataError) as err:
            load(shard, tmp_path)
        text = str(err.value)
        assert text.startswith(f"WebDataset shard '{shard}': the files of sample '000' are "
                               f"not next to each other ('000.jpg' is member 1 and "
                               f"'000.{second}' member 11, with other samples between)")
        assert f"{SORT_FIX} (GNU tar" in text
        assert "`simsiam shard FOLDER OUT`" in text
        # the same files in name order: every image read, with its caption or label
        whole = _tar(tmp_path / second / "sorted.tar", [m for p in pairs for m in p])
        splits = load(whole, tmp_path)
        assert len(splits.train) == 10 and splits.skipped == 0
        assert splits.train.paths == [f"{whole}/{k}" for k in keys]
        if second == "txt":
            assert splits.train.captions == [[f"photo {k}"] for k in keys]
    out = tmp_path / "run"
    code, err_lines = _pretrain(capsys, shard, out, "demo-cpu")
    assert code == 2 and len(err_lines) == 1 and not out.exists()
    assert err_lines[0].startswith(f"simsiam pretrain: error: WebDataset shard '{shard}': "
                                   "the files of sample '000' are not next to each other")


def test_dotted_names_that_put_several_images_in_one_sample_are_refused_naming_them(
        tmp_path, capsys):
    plain = [m for p in _pairs([f"img{k:02d}" for k in range(8)]) for m in p]
    dotted = [m for p in _pairs([f"{c}.{i}" for c in ("cat", "dog") for i in range(6)])
              for m in p]
    shard = _tar(tmp_path / "dotted.tar", plain + dotted)  # 20 images, 12 of them dotted
    with pytest.raises(DataError) as err:
        _captions(shard, tmp_path)
    assert str(err.value) == (
        f"WebDataset shard '{shard}': sample 'cat' holds 6 images ('cat.0.jpg', 'cat.1.jpg', "
        "'cat.2.jpg' and 3 more), and a sample is one image: a file's sample key is its name "
        "up to the first dot, so names with a dot before the extension (cat.0.jpg, "
        "cat.1.jpg) fall into one sample (key 'cat'). Give each image a key of its own "
        "without dots, its caption or label beside it (cat_0.jpg with cat_0.txt, cat_1.jpg "
        "with cat_1.txt), and write the tar again")
    labelled = _tar(tmp_path / "labelled.tar", [(n.replace(".txt", ".cls"), b"1")
                                                if n.endswith(".txt") else (n, d)
                                                for n, d in plain + dotted])
    with pytest.raises(DataError, match="sample 'cat' holds 6 images .'cat.0.jpg'"):
        _images(labelled, tmp_path)
    code, err_lines = _pretrain(capsys, shard, tmp_path / "run", "clip-cpu")
    assert code == 2 and len(err_lines) == 1 and "sample 'cat' holds 6 images" in err_lines[0]
    # one image under a dotted name is not "no image": refused the same way
    single = _tar(tmp_path / "single.tar", plain + [("photo.v2.jpg", _jpeg(99)),
                                                    ("photo.v2.txt", b"a photo")])
    with pytest.raises(DataError) as err:
        _captions(single, tmp_path)
    assert ("sample 'photo' holds its image under a dotted name ('photo.v2.jpg': extension "
            "'v2.jpg', which is no image extension)") in str(err.value)
    # renamed as the message says: all 20 images are read
    renamed = _tar(tmp_path / "renamed.tar", [(n.replace(".", "_", 1) if n.count(".") == 2
                                               else n, d) for n, d in plain + dotted])
    splits = _captions(renamed, tmp_path)
    assert len(splits.train) == 20 and f"{renamed}/cat_5" in splits.train.paths


def test_a_file_that_is_in_the_tar_twice_is_refused_naming_it(tmp_path):
    members = [m for p in _pairs(["a", "b"]) for m in p]
    shard = _tar(tmp_path / "twice.tar", members[:2] + [("a.txt", b"another caption")]
                 + members[2:])
    with pytest.raises(DataError) as err:
        _captions(shard, tmp_path)
    assert str(err.value) == (f"WebDataset shard '{shard}' holds 'a.txt' twice (the second "
                              "is member 3): the later would replace the earlier, which would "
                              "be lost; keep one and write the tar again")


def _whole_and_offsets(path: Path, n: int = 30) -> tuple[Path, dict[str, tarfile.TarInfo]]:
    shard = _tar(path, [m for p in _pairs([f"{k:03d}" for k in range(n)]) for m in p])
    with tarfile.open(shard) as tar:
        return shard, {m.name: m for m in tar}


def _cut(shard: Path, size: int) -> Path:
    shard.write_bytes(shard.read_bytes()[:size])
    return shard


def test_a_shard_cut_inside_a_file_is_named_with_the_samples_read(tmp_path, capsys):
    shard, info = _whole_and_offsets(tmp_path / "s" / "001.tar")
    m = info["022.jpg"]
    _cut(shard, m.offset_data + m.size // 2)
    for pipeline in ("cache", "stream"):  # found while indexing, before either pipeline
        with pytest.raises(DataError) as err:
            _images(shard, tmp_path, pipeline)
        assert str(err.value) == (
            f"WebDataset shard '{shard}' is cut short: it ends at byte "
            f"{m.offset_data + m.size // 2:,}, inside '022.jpg' (which needs {m.size:,} bytes "
            f"from byte {m.offset_data:,}); 22 samples were read from it before that (the "
            "last '021'). Write or download it again (or leave it out of the pattern) so "
            "that no sample of it is lost")
    code, err_lines = _pretrain(capsys, shard, tmp_path / "run", "clip-cpu")
    assert code == 2 and len(err_lines) == 1
    assert err_lines[0].startswith(f"simsiam pretrain: error: WebDataset shard '{shard}' is "
                                   "cut short")


def test_a_shard_cut_between_files_is_named_among_whole_ones(tmp_path):
    whole = [_whole_and_offsets(tmp_path / "s" / f"{i:03d}.tar")[0] for i in (0, 2)]
    shard, info = _whole_and_offsets(tmp_path / "s" / "001.tar")
    _cut(shard, info["026.jpg"].offset)  # a whole number of files: tar readers stop quietly
    pattern = tmp_path / "s" / "{000..002}.tar"
    with pytest.raises(DataError) as err:
        _captions(pattern, tmp_path)
    assert str(err.value) == (
        f"WebDataset shard '{shard}' is cut short: it ends at byte "
        f"{info['026.jpg'].offset:,} after member '025.txt', without the end-of-archive "
        "block; 26 samples were read from it before that (the last, '025', may lack files "
        "that were cut off). Write or download it again (or leave it out of the pattern) so "
        "that no sample of it is lost")
    # left out of the pattern (patterns joined with '::'), the whole shards are read
    rest = _captions(Path(f"{whole[0]}::{whole[1]}"), tmp_path)
    assert len(rest.train) == 60 and rest.train.paths[30] == f"{whole[1]}/000"


def test_two_tars_joined_with_cat_are_refused_not_read_in_part(tmp_path):
    a, _ = _whole_and_offsets(tmp_path / "a.tar", 5)
    b, _ = _whole_and_offsets(tmp_path / "b.tar", 5)
    joined = tmp_path / "joined.tar"
    joined.write_bytes(a.read_bytes() + b.read_bytes())
    with pytest.raises(DataError) as err:
        _captions(joined, tmp_path)
    text = str(err.value)
    assert text.startswith(f"WebDataset shard '{joined}' holds data after its end (byte ")
    assert f"of {joined.stat().st_size:,}: two tars joined with `cat`?)" in text
    assert "5 samples were read from it before that (the last '004')" in text


def test_a_shard_cut_mid_run_is_named_by_the_stream_and_refused_by_the_next_run(tmp_path):
    labelled = _tar(tmp_path / "l.tar",
                    [m for p in _pairs([f"{k:03d}" for k in range(12)], "cls") for m in p])
    splits = _images(labelled, tmp_path, "stream")
    assert splits.pipeline == "stream" and len(splits.train) == 12
    with tarfile.open(labelled) as tar:
        cut_at = {m.name: m for m in tar}["008.jpg"].offset
    _cut(labelled, cut_at)  # after indexing: images 008 .. 011 are gone
    aug = BatchedViewAugment(AugmentConfig(recipe="simsiam"), 16)
    train = splits.train
    loader = StreamViewLoader(train.images.sources, train.images.names, aug, 4, 0,
                              torch.device("cpu"), num_workers=0)
    loader.sampler.set_epoch(0)
    with pytest.warns(DataWarning) as caught:
        batches = list(loader)
    text = "\n".join(str(w.message) for w in caught if issubclass(w.category, DataWarning))
    assert "skipped 4 image file(s)" in text
    for k in range(8, 12):
        assert f"{labelled}/{k:03d}: OSError: WebDataset shard '{labelled}' is cut short" in text
    index = torch.cat([b[-1] for b in batches]).tolist()  # full batches: each cut image
    assert len(index) == 12 and set(index) == set(range(8))  # replaced by a whole one
    with pytest.raises(DataError, match=re.escape(
            f"WebDataset shard '{labelled}' is cut short: it ends at byte {cut_at:,} after "
            "member '007.cls'")):
        _images(labelled, tmp_path, "stream")  # the next run: refused before training

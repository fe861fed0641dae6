"""Caption data: tables (CSV, TSV, JSONL) and WebDataset shards, on real Flickr8k photographs."""

from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest
import torch

from simsiam.config import DataConfig
from simsiam.data import load_data
from simsiam.data import shards as shards_mod
from simsiam.data.captions import (
    caption_table_in,
    is_caption_source,
    load_caption_data,
    read_caption_table,
)
from simsiam.errors import DataError, DataWarning

NON_ASCII = "Café, naïve — 東京"
QUOTED = 'He said "hi, there" and left'


@pytest.fixture(scope="module")
def flickr_table(flickr_dir):
    return flickr_dir.parent / "captions.csv"


@pytest.fixture(scope="module")
def flickr_rows(flickr_table) -> list[tuple[str, str]]:
    """The real table's (image, caption) rows, read with the csv module (the reference)."""
    with open(flickr_table, encoding="utf-8", newline="") as f:
        return [(r["image"], r["caption"]) for r in csv.DictReader(f)]


def _cfg(tmp_path, source, **kw) -> DataConfig:
    kw = {"image_size": 32, "holdout_fraction": 0.0, "cache_dir": str(tmp_path / "cache")} | kw
    return DataConfig(source=str(source), **kw)


def _load(cfg: DataConfig, seed: int = 0):
    """load_data, with the DataWarnings it gave."""
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        splits = load_data(cfg, seed, progress=False)
    return splits, [w for w in rec if issubclass(w.category, DataWarning)]


def test_caption_sources_are_recognised(tmp_path):
    for s in ("a/captions.csv", "x.TSV", "c.jsonl", "shards/{00000..00099}.tar", "one.tar",
              "a.tar::b.tar"):
        assert is_caption_source(s), s
    for s in ("cifar10", "photos", "a.txt", "notes.json", "x.tar.bak", ""):
        assert not is_caption_source(s), s
    (tmp_path / "odd.csv").mkdir()  # a folder is a folder, whatever its name
    assert not is_caption_source(str(tmp_path / "odd.csv"))
    assert caption_table_in(tmp_path) is None and caption_table_in(tmp_path / "no") is None
    (tmp_path / "captions.jsonl").write_text("")
    assert caption_table_in(tmp_path) == tmp_path / "captions.jsonl"


def test_caption_table_in_the_real_folder(flickr_table):
    assert caption_table_in(flickr_table.parent) == flickr_table
    assert caption_table_in(flickr_table.parent / "images") is None


def test_real_flickr_table_is_read_verbatim(flickr_table, flickr_dir, flickr_rows):
    rows = read_caption_table(flickr_table)  # image paths found under images/ by default
    assert (len(rows.paths), rows.rows, rows.bad) == (1000, 5000, [])
    assert all(len(c) == 5 for c in rows.captions)
    expected: dict[str, list[str]] = {}
    for image, caption in flickr_rows:
        expected.setdefault(str(flickr_dir / image), []).append(caption)
    assert rows.paths == list(expected) and rows.captions == list(expected.values())
    by_name = dict(zip((p.rsplit("/", 1)[1] for p in rows.paths), rows.captions, strict=True))
    assert by_name["1012212859_01547e3f17.jpg"][0] == (
        "A dog shakes its head near the shore , a red ball next to it .")
    assert by_name["1012212859_01547e3f17.jpg"][2] == (
        "Dog with orange ball at feet , stands on shore shaking off water")
    assert by_name["1253275679_e955fb7304.jpg"][4] == (
        'Young boy with a black " ADHD " t-shirt nodding off')
    assert by_name["1527333441_af65636a74.jpg"][0] == (
        "A man in a blue shirt and jeans stands behind a sign that says "
        "\" Mark ' Mom ' Finley \" .")


def test_real_flickr_split_is_by_image_and_seeded(tmp_path, flickr_table, flickr_dir):
    cfg = _cfg(tmp_path, flickr_table, holdout_fraction=0.2)
    splits, warned = _load(cfg)
    train, test = splits.train, splits.test
    assert not warned and test is not None
    assert (len(train), len(test)) == (800, 200)
    assert (splits.found, splits.held_out, splits.capped, splits.skipped) == (1000, 200, 0, 0)
    assert not set(train.paths) & set(test.paths)
    assert len(set(train.paths) | set(test.paths)) == 1000
    assert train.images.shape == (800, 37, 37, 3) and train.images.dtype == np.uint8
    assert train.classes == [""] and not train.labels.any() and not train.labelled
    table = read_caption_table(flickr_table)
    truth = dict(zip(table.paths, table.captions, strict=True))
    for s in (train, test):
        assert [truth[p] for p in s.paths] == s.captions
    again, _ = _load(cfg)  # the same seed: the same split (from the cache)
    assert again.train.paths == train.paths and again.test.paths == test.paths
    assert np.array_equal(again.train.images, train.images)
    other, _ = _load(cfg, seed=1)
    assert set(other.test.paths) != set(test.paths) and len(other.test) == 200
    sub = train.subset(np.array([5, 0]))  # subsets and label removal keep captions aligned
    assert sub.captions == [train.captions[5], train.captions[0]]
    assert train.without_labels().captions is train.captions
    capped, _ = _load(_cfg(tmp_path, flickr_table, holdout_fraction=0.2, per_class=50))
    assert (len(capped.train), capped.capped) == (50, 750)
    assert capped.train.paths == train.paths[:50]


def _few_rows(flickr_rows, n_images: int):
    """(image name, caption) rows of the first real images, two of them with extra rows
    (non-ASCII, quotes and a comma) after other images' rows."""
    names = list(dict.fromkeys(image for image, _ in flickr_rows))[:n_images]
    rows = [r for name in names for r in [r for r in flickr_rows if r[0] == name][:2]]
    return rows + [(names[0], NON_ASCII), (names[1], f"  {QUOTED}  ")]


def _write_tables(tmp_path, rows):
    with open(tmp_path / "t.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption"])
        w.writerows(rows)
    (tmp_path / "t.tsv").write_text(
        "filepath\ttitle\n" + "".join(f"{i}\t{c}\n" for i, c in rows), encoding="utf-8")
    (tmp_path / "t.jsonl").write_text(
        "".join(json.dumps({"id": k, "path": i, "text": c}, ensure_ascii=False) + "\n"
                for k, (i, c) in enumerate(rows)), encoding="utf-8")


def test_tsv_and_jsonl_give_the_same_as_csv(tmp_path, flickr_dir, flickr_rows):
    rows = _few_rows(flickr_rows, 4)
    _write_tables(tmp_path, rows)
    expected: dict[str, list[str]] = {}
    for image, caption in rows:
        expected.setdefault(str(flickr_dir / image), []).append(caption.strip())
    loaded = {}
    for name in ("t.csv", "t.tsv", "t.jsonl"):
        splits, warned = _load(_cfg(tmp_path, tmp_path / name, image_root=str(flickr_dir)))
        assert not warned and splits.test is None
        loaded[name] = splits.train
        assert splits.train.paths == list(expected), name
        assert splits.train.captions == list(expected.values()), name
    assert loaded["t.csv"].captions[0][-1] == NON_ASCII
    assert loaded["t.csv"].captions[1][-1] == QUOTED
    assert np.array_equal(loaded["t.csv"].images, loaded["t.tsv"].images)
    assert np.array_equal(loaded["t.csv"].images, loaded["t.jsonl"].images)


def test_columns_are_chosen_or_named(tmp_path, flickr_dir):
    image = sorted(flickr_dir.iterdir())[0]
    table = tmp_path / "c.csv"
    table.write_text(f"Caption,Image,other\nfirst,{image},x\n", encoding="utf-8")
    rows = read_caption_table(table)  # default names in any letter case, any order
    assert (rows.paths, rows.captions) == ([str(image)], [["first"]])
    rows = read_caption_table(table, image_column="Image", caption_column="other")
    assert rows.captions == [["x"]]
    with pytest.raises(DataError) as err:
        read_caption_table(table, caption_column="sentence")
    assert "'sentence'" in str(err.value) and "data.caption_column" in str(err.value)
    table.write_text(f"url,alt\n{image},a photo\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_caption_data(_cfg(tmp_path, table))
    text = str(err.value)
    assert str(table) in text and "['url', 'alt']" in text
    assert "data.image_column" in text and "data.caption_column" in text
    with pytest.raises(DataError, match="does not exist"):
        load_caption_data(_cfg(tmp_path, tmp_path / "none.csv"))


def test_bad_rows_are_skipped_with_one_warning_or_stop_a_strict_run(tmp_path, flickr_dir):
    a, b = sorted(p.name for p in flickr_dir.iterdir())[:2]
    lines = [
        json.dumps({"image": a, "caption": "a dog"}),            # line 1
        json.dumps({"image": "gone.jpg", "caption": "lost"}),    # 2: no such file
        json.dumps({"image": b, "caption": "   "}),              # 3: empty caption
        "[1, 2]",                                                 # 4: not an object
        "",                                                       # 5: blank, ignored
        json.dumps({"image": b}),                                 # 6: missing field
        '{"image": "x.jpg", "caption": ',                         # 7: not JSON
        json.dumps({"image": b, "caption": 7}),                  # 8: not text
        json.dumps({"image": b, "caption": " a cat "}),          # 9
    ]
    table = tmp_path / "bad.jsonl"
    table.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = _cfg(tmp_path, table, image_root=str(flickr_dir))
    splits, warned = _load(cfg)
    assert len(warned) == 1
    text = str(warned[0].message)
    assert f"'{table}': skipped 6 of 8 rows" in text
    for where, why in [(2, "image 'gone.jpg' not found"), (3, "empty caption"),
                       (4, "not a JSON object"), (6, "no field 'caption'"),
                       (7, "not valid JSON"), (8, "field 'caption' is a int")]:
        assert f"line {where}: {why}" in text, where
    assert splits.train.captions == [["a dog"], ["a cat"]]
    assert splits.train.paths == [str(flickr_dir / a), str(flickr_dir / b)]
    with pytest.raises(DataError) as err:
        load_caption_data(_cfg(tmp_path, table, image_root=str(flickr_dir), strict=True))
    assert f"'{table}' line 2: image 'gone.jpg' not found" in str(err.value)
    assert "--strict" in str(err.value)
    table = tmp_path / "bad.csv"  # an unquoted comma: a row with too many fields
    table.write_text(f"image,caption\n{a},fine\n{b},a dog, a ball\n", encoding="utf-8")
    splits, warned = _load(_cfg(tmp_path, table, image_root=str(flickr_dir)))
    assert "line 3: 3 fields where the header has 2" in str(warned[0].message)
    assert splits.train.captions == [["fine"]]


def test_undecodable_image_is_skipped_with_its_captions(tmp_path, flickr_dir):
    a, b = sorted(flickr_dir.iterdir())[:2]
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "x.jpg").write_text("a text file named like an image")
    table = tmp_path / "t.csv"
    table.write_text(f"image,caption\n{a},first\nx.jpg,never seen\n{b},second\n"
                     "x.jpg,nor this\n", encoding="utf-8")  # absolute paths ignore the root
    cfg = _cfg(tmp_path, table, image_root=str(tmp_path / "imgs"))
    splits, warned = _load(cfg)
    assert len(warned) == 1 and "skipped 1 of 3 image files" in str(warned[0].message)
    assert str(tmp_path / "imgs" / "x.jpg") in str(warned[0].message)
    assert splits.train.paths == [str(a), str(b)]
    assert splits.train.captions == [["first"], ["second"]]
    assert len(splits.train.images) == 2 and (splits.found, splits.skipped) == (3, 1)
    with pytest.raises(DataError, match="x.jpg"):
        load_caption_data(_cfg(tmp_path, table, image_root=str(tmp_path / "imgs"),
                               strict=True), progress=False)


def _write_shards(folder, samples, per_shard):
    import webdataset as wds

    folder.mkdir()
    for s in range(0, len(samples), per_shard):
        with wds.TarWriter(str(folder / f"{s // per_shard:03d}.tar")) as w:
            for sample in samples[s:s + per_shard]:
                w.write(sample)


def test_webdataset_shards_equal_the_table(tmp_path, flickr_dir, flickr_rows, monkeypatch):
    pairs = [(image, caption) for image, caption in flickr_rows[::5]][:30]  # one caption each
    pairs[3] = (pairs[3][0], NON_ASCII)
    table = tmp_path / "t.csv"
    with open(table, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([("image", "caption"), *pairs])
    samples = []
    for k, (image, caption) in enumerate(pairs):
        sample = {"__key__": f"{k:06d}", "jpg": (flickr_dir / image).read_bytes()}
        sample.update({"json": {"caption": caption, "url": "x"}} if k == 7 else
                      {"txt": caption + "\n"})
        samples.append(sample)
    _write_shards(tmp_path / "shards", samples, per_shard=8)  # 000..003: 8, 8, 8, 6
    pattern = str(tmp_path / "shards" / "{000..003}.tar")
    kw = {"holdout_fraction": 0.25, "cache_dir": str(tmp_path / "cache")}
    from_table, warned = _load(_cfg(tmp_path, table, image_root=str(flickr_dir), **kw))
    assert not warned
    from_shards, warned = _load(_cfg(tmp_path, pattern, **kw))
    assert not warned
    assert (from_shards.found, from_shards.held_out) == (30, 8)
    number = {image: k for k, (image, _) in enumerate(pairs)}  # 30 distinct images
    for a, b in ((from_table.train, from_shards.train), (from_table.test, from_shards.test)):
        assert np.array_equal(a.images, b.images)
        assert a.captions == b.captions
        ks = [number[p.rsplit("/", 1)[1]] for p in a.paths]
        assert b.paths == [f"{tmp_path / 'shards'}/{k // 8:03d}.tar/{k:06d}" for k in ks]
    assert NON_ASCII in [c[0] for c in from_shards.train.captions + from_shards.test.captions]
    # ... so CLIP's training batches are the same: images, views and token ids
    from simsiam.config import load_config
    from simsiam.data.loaders import make_batches

    cfg = load_config(None, {"method": "clip", "data.image_size": 32, "train.batch_size": 8,
                             "model.clip.context_length": 16})
    batches = []
    for train in (from_table.train, from_shards.train):
        loader = make_batches("captions", train, cfg, torch.device("cpu"))
        loader.sampler.set_epoch(1)
        batches.append(list(loader))
    assert len(batches[0]) == len(batches[1]) == 2  # 22 training pairs, batch 8
    for a, b in zip(*batches, strict=True):
        assert torch.equal(a.images, b.images) and torch.equal(a.tokens, b.tokens)
        assert torch.equal(a.index, b.index) and a.tokens.shape == (8, 16)

    opened, decoded = [], []  # a second load opens no shard and decodes nothing
    monkeypatch.setattr(shards_mod, "tar_samples", lambda shard: opened.append(shard) or [])
    from simsiam.data import cache as cache_mod

    real = cache_mod._read
    monkeypatch.setattr(cache_mod, "_read", lambda src, side: decoded.append(1) or real(src, side))
    again, _ = _load(_cfg(tmp_path, pattern, **kw))
    assert (opened, decoded) == ([], [])
    assert np.array_equal(again.train.images, from_shards.train.images)
    assert again.train.captions == from_shards.train.captions


def test_bad_and_missing_shards_are_named(tmp_path, flickr_dir):
    a, b = sorted(flickr_dir.iterdir())[:2]
    samples = [{"__key__": "good1", "jpg": a.read_bytes(), "txt": "a photo"},
               {"__key__": "nocap", "jpg": b.read_bytes()},
               {"__key__": "noimg", "txt": "a caption alone"},
               {"__key__": "blank", "png": b.read_bytes(), "txt": " \n"},
               {"__key__": "broken", "jpg": b"not a jpeg", "txt": "undecodable"},
               {"__key__": "good2", "webp": b.read_bytes(), "txt": "another"}]
    _write_shards(tmp_path / "s", samples, per_shard=6)
    shard = tmp_path / "s" / "000.tar"
    splits, warned = _load(_cfg(tmp_path, shard))
    assert len(warned) == 2  # the bad samples, then the image that cannot be decoded
    text = str(warned[0].message)
    assert f"'{shard}': skipped 3 of 6 samples" in text
    assert f"'{shard}' key 'nocap': no caption" in text
    assert f"'{shard}' key 'noimg': no image" in text
    assert f"'{shard}' key 'blank': empty caption" in text
    assert f"{shard}/broken" in str(warned[1].message)
    assert splits.train.paths == [f"{shard}/good1", f"{shard}/good2"]
    assert splits.train.captions == [["a photo"], ["another"]]
    with pytest.raises(DataError, match="key 'nocap'"):
        load_caption_data(_cfg(tmp_path, shard, strict=True), progress=False)
    with pytest.raises(DataError) as err:
        load_caption_data(_cfg(tmp_path, tmp_path / "s" / "{000..002}.tar"), progress=False)
    assert f"'{tmp_path / 's' / '001.tar'}' does not exist" in str(err.value)
    assert "2 of the 3 shards" in str(err.value)
    (tmp_path / "s" / "bad.tar").write_bytes(b"this is not a tar file" * 40)
    with pytest.raises(DataError, match="cannot read WebDataset shard .*bad.tar"):
        load_caption_data(_cfg(tmp_path, tmp_path / "s" / "bad.tar"), progress=False)

"""``simsiam neighbors`` and its parts: the exact search, the index kept on disk, the
contact sheet, the thumbnail map; on real photos copied (some twice) into tmp folders."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from simsiam.cli import build_parser, main
from simsiam.errors import ConfigError, DataError
from simsiam.eval.neighbors import NeighborIndex, faiss_available
from simsiam.report.sheets import thumbnail_map

from .conftest import REPO, save_random_backbone

FLICKR = REPO.parent / "shared" / "data" / "flickr8k-1k" / "images"
TOL = 1e-5
# name in the folder -> index of the real photo it is a byte copy of
TWINS = {"dup_a.jpg": 0, "dup_b.jpg": 1, "zz_c.jpg": 2}


@pytest.fixture(scope="module")
def photos() -> list[Path]:
    if not FLICKR.is_dir():
        pytest.skip(f"real photos not found at {FLICKR}")
    return sorted(FLICKR.glob("*.jpg"))[:12]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised ResNet-18 (7x7 stem) exported as a simsiam backbone, 64 px."""
    return save_random_backbone(tmp_path_factory.mktemp("ckpt") / "backbone.safetensors", 64)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Decoded images and indexes of each test in its own cache directory."""
    monkeypatch.setenv("SIMSIAM_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def folder(tmp_path, photos) -> Path:
    """12 distinct real photos and 3 byte-identical copies of the first three (15 files)."""
    root = tmp_path / "folder"
    root.mkdir()
    for p in photos:
        shutil.copy(p, root / p.name)
    for name, i in TWINS.items():
        shutil.copy(photos[i], root / name)
    return root


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["neighbors", *argv, "--no-progress"])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _pairs(folder: Path, photos: list[Path]) -> dict[str, str]:
    """file -> its byte-identical twin, both ways."""
    pairs = {}
    for name, i in TWINS.items():
        pairs[str(folder / name)] = str(folder / photos[i].name)
        pairs[str(folder / photos[i].name)] = str(folder / name)
    return pairs


def test_query_all_finds_every_duplicate_twin_first(folder, photos, checkpoint, tmp_path,
                                                    capsys):
    out = tmp_path / "all.json"
    rc, stdout, _ = _run(capsys, "--checkpoint", str(checkpoint), "--data", str(folder),
                         "--query-all", "--k", "3", "--out", str(out))
    assert rc == 0
    assert f"15 images x 3 neighbours -> {out}" in stdout
    record = json.loads(out.read_text())
    assert record["checkpoint"] == str(checkpoint) and record["data"] == str(folder)
    assert record["k"] == 3 and len(record["neighbors"]) == 15
    pairs = _pairs(folder, photos)
    for entry in record["neighbors"]:
        nbrs = entry["neighbors"]
        assert len(nbrs) == 3 and entry["path"] not in [n["path"] for n in nbrs]
        sims = [n["similarity"] for n in nbrs]
        assert sims == sorted(sims, reverse=True)
        if entry["path"] in pairs:
            assert nbrs[0]["path"] == pairs[entry["path"]]
            assert abs(nbrs[0]["similarity"] - 1.0) <= TOL
            assert nbrs[1]["similarity"] < 1.0 - 1e-4  # only one copy of each
        else:  # distinct photos are not found as copies
            assert nbrs[0]["similarity"] < 1.0 - 1e-4

    # The same neighbours as CSV rows (path, rank, neighbor, similarity), index reused.
    out_csv = tmp_path / "all.csv"
    rc, stdout, _ = _run(capsys, "--checkpoint", str(checkpoint), "--data", str(folder),
                         "--query-all", "--k", "3", "--out", str(out_csv))
    assert rc == 0 and "reused from" in stdout
    with out_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "rank", "neighbor", "similarity"]
    assert len(rows) == 15 * 3
    firsts = {r["path"]: r for r in rows if r["rank"] == "1"}
    for a, b in pairs.items():
        assert firsts[a]["neighbor"] == b and abs(float(firsts[a]["similarity"]) - 1) <= TOL


def test_query_sheet_and_self_exclusion_by_path(folder, photos, checkpoint, tmp_path, capsys):
    query = folder / photos[0].name  # in the folder; its twin is dup_a.jpg
    sheet = tmp_path / "sheet.png"
    rc, stdout, _ = _run(capsys, "--checkpoint", str(checkpoint), "--data", str(folder),
                         "--query", str(query), "--k", "4", "--out", str(sheet))
    assert rc == 0
    line = next(x for x in stdout.splitlines() if x.startswith(f"neighbors: {query} -> "))
    found = re.findall(r"(\S+) \((\d\.\d{3})\)", line.split(" -> ", 1)[1])
    assert len(found) == 4
    assert found[0] == ("dup_a.jpg", "1.000")
    assert photos[0].name not in [n for n, _ in found]  # itself: same path, left out
    assert f"neighbors: sheet -> {sheet}" in stdout
    with Image.open(sheet) as im:
        assert im.format == "PNG"
        w, h = im.size
    assert w > h and w >= 5 * 100 and h >= 100  # 1 row of query + 4 neighbours

    # A copy outside the folder under the same name is another path: not excluded, so
    # both identical photos of the folder come first.
    outside = tmp_path / "elsewhere" / photos[1].name
    outside.parent.mkdir()
    shutil.copy(photos[1], outside)
    rc, stdout, _ = _run(capsys, "--checkpoint", str(checkpoint), "--data", str(folder),
                         "--query", str(outside), "--k", "3", "--out",
                         str(tmp_path / "sheet2.png"))
    assert rc == 0
    found = re.findall(r"(\S+) \((\d\.\d{3})\)", stdout.split(" -> ", 1)[1].splitlines()[0])
    assert sorted(n for n, _ in found[:2]) == sorted(["dup_b.jpg", photos[1].name])
    assert [s for _, s in found[:2]] == ["1.000", "1.000"] and found[2][1] != "1.000"


def test_index_is_reused_then_rebuilt_when_an_image_changes(tmp_path, photos, checkpoint,
                                                            capsys):
    root = tmp_path / "small"
    root.mkdir()
    for p in photos[:6]:
        shutil.copy(p, root / p.name)
    args = ("--checkpoint", str(checkpoint), "--data", str(root), "--query-all", "--k", "2",
            "--overwrite", "--out", str(tmp_path / "n.json"))
    store = tmp_path / "cache" / "neighbors"
    rc, stdout, _ = _run(capsys, *args)
    assert rc == 0 and "neighbors: index of 6 images built -> " in stdout
    first = sorted(store.glob("*.npz"))
    assert len(first) == 1
    with np.load(first[0]) as z:
        feats = z["features"]
        assert feats.shape == (6, 512) and feats.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    rc, stdout, _ = _run(capsys, *args)
    assert rc == 0 and f"neighbors: index of 6 images reused from {first[0]}" in stdout

    changed = root / photos[0].name  # another photo's pixels under the same name
    shutil.copy(photos[7], changed)
    os.utime(changed, ns=(1_000_000_000, 1_000_000_000))
    rc, stdout, _ = _run(capsys, *args)
    assert rc == 0 and "images built" in stdout and "images reused" not in stdout
    assert len(list(store.glob("*.npz"))) == 2

    rc, stdout, _ = _run(capsys, *args, "--no-cache")
    assert rc == 0 and "built (not cached)" in stdout
    assert len(list(store.glob("*.npz"))) == 2


def test_bad_command_lines_are_refused_naming_the_flag(tmp_path, checkpoint, folder, capsys):
    parse = build_parser().parse_args
    out = tmp_path / "n.json"
    out.write_text("keep me")
    base = ["neighbors", "--checkpoint", str(checkpoint), "--data", str(folder)]
    with pytest.raises(ConfigError, match=r"--out '.*n\.json' already exists; pass --overwrite"):
        args = parse([*base, "--query-all", "--out", str(out)])
        args.func(args)
    assert out.read_text() == "keep me"

    missing = tmp_path / "nope.jpg"
    with pytest.raises(DataError, match=re.escape(f"--query '{missing}' does not exist")):
        args = parse([*base, "--query", str(missing), "--out", str(tmp_path / "s.png")])
        args.func(args)

    rc, _, err = _run(capsys, *base[1:], "--query", str(folder / "dup_a.jpg"), "--query-all",
                      "--out", str(tmp_path / "x.json"))
    assert rc == 2 and "--query and --query-all do not go together" in err
    rc, _, err = _run(capsys, *base[1:], "--out", str(tmp_path / "x.json"))
    assert rc == 2 and "nothing to search: pass --query IMG" in err
    rc, _, err = _run(capsys, *base[1:], "--query-all", "--out", str(tmp_path / "x.png"))
    assert rc == 2 and "--query-all writes .json or .csv" in err


def _unit(angles_deg) -> np.ndarray:
    a = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    return np.stack([np.cos(a), np.sin(a)], 1).astype(np.float32)


def test_search_known_answer_with_and_without_exclusion():
    index = NeighborIndex(_unit([0, 10, 30, 90, 180]), ["a", "b", "c", "d", "e"])
    sims, idx = index.search(_unit([0, 95]), k=3)
    assert idx.dtype == np.int64 and sims.dtype == np.float32 and sims.shape == (2, 3)
    assert idx.tolist() == [[0, 1, 2], [3, 2, 1]]
    np.testing.assert_allclose(sims[0], np.cos(np.deg2rad([0, 10, 30])), atol=1e-6)
    np.testing.assert_allclose(sims[1], np.cos(np.deg2rad([5, 65, 85])), atol=1e-6)
    sims, idx = index.search(_unit([0, 95]), k=3, exclude=[0, None])
    assert idx.tolist() == [[1, 2, 3], [3, 2, 1]]
    # k larger than the candidates: reduced to N - 1 when a query excludes a row.
    sims, idx = index.search(_unit([0]), k=10, exclude=[0])
    assert idx.tolist() == [[1, 2, 3, 4]]
    with pytest.raises(ValueError, match="outside 0..4"):
        index.search(_unit([0]), k=1, exclude=[5])


def test_search_in_blocks_matches_a_full_sort():
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((53, 16)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    index = NeighborIndex(feats, [str(i) for i in range(53)])
    queries = feats[:9]
    sims, idx = index.search(queries, 5, exclude=list(range(9)), bank_block=7, query_block=4)
    full = queries @ feats.T
    full[np.arange(9), np.arange(9)] = -np.inf
    want = np.argsort(-full, axis=1, kind="stable")[:, :5]
    assert idx.tolist() == want.tolist()
    np.testing.assert_allclose(sims, np.take_along_axis(full, want, 1), atol=1e-6)


@pytest.mark.skipif(not faiss_available(), reason="faiss is not installed (optional)")
def test_faiss_path_gives_the_brute_force_answer():
    rng = np.random.default_rng(1)
    feats = rng.standard_normal((300, 32)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    index = NeighborIndex(feats, [str(i) for i in range(300)])
    assert index.uses_faiss(brute_force_max=100) and not index.uses_faiss(300)
    exclude = [0, None, 2, None]
    fs, fi = index.search(feats[:4], 6, exclude, brute_force_max=100)
    bs, bi = index.search(feats[:4], 6, exclude, brute_force_max=10**9)
    assert fi.tolist() == bi.tolist() and fi[1, 0] == 1 and 0 not in fi[0]
    np.testing.assert_allclose(fs, bs, atol=1e-5)


def test_thumbnail_map_draws_the_photos(photos, tmp_path):
    from simsiam.data.cache import read_rgb

    images = np.stack([read_rgb(p, 32) for p in photos])
    xy = np.random.default_rng(0).normal(size=(len(images), 2))
    path = thumbnail_map(xy, images, tmp_path / "map" / "thumbs.png", title="t",
                         max_thumbs=8, figsize=(4.0, 3.0), dpi=100)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (400, 300)
        rgb = np.asarray(im.convert("RGB")).astype(int)
    coloured = (rgb.max(axis=2) - rgb.min(axis=2) > 25).sum()
    assert coloured > 8 * 24 * 24 * 0.2  # the thumbnails' pixels, not only grey dots
    with pytest.raises(ValueError, match="12 positions but 11 images"):
        thumbnail_map(xy, images[:11], tmp_path / "bad.png")

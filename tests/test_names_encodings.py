"""File names that are not UTF-8, user text files in other encodings, and image formats
Pillow reads (or cannot): on real photos copied into tmp folders, through the command line."""

from __future__ import annotations

import csv
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features
from safetensors import safe_open
from torch import nn

from simsiam.cli import main
from simsiam.config import load_config
from simsiam.data.cache import cache_key, decode_to_cache
from simsiam.data.decode import HEIF_PLUGIN
from simsiam.data.folder import IMAGE_EXTENSIONS, scan_image_folder
from simsiam.data.stream import check_headers
from simsiam.data.tables import read_caption_table
from simsiam.errors import ConfigError, DataError, DataWarning
from simsiam.eval.clip_inputs import given_class_names
from simsiam.eval.linear_run import write_linear_result
from simsiam.eval.zeroshot import templates
from simsiam.fileio import display_path, read_utf8_text

from .conftest import FLICKR_DIR, save_random_backbone

LATIN1 = b"caf\xe9.jpg"  # "café.jpg" in Latin-1: not valid UTF-8
SHOWN = "caf\\xe9.jpg"  # how it is shown and written: 11 characters, a real backslash


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMSIAM_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def photos() -> list[Path]:
    if not FLICKR_DIR.is_dir():
        pytest.skip(f"real photos not found at {FLICKR_DIR}")
    return sorted(FLICKR_DIR.glob("*.jpg"))[:15]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised ResNet-18 exported as a simsiam backbone, 32 px."""
    return save_random_backbone(tmp_path_factory.mktemp("ckpt") / "backbone.safetensors", 32)


def _latin1_folder(root: Path, photos: list[Path], n: int = 5) -> Path:
    """``n`` real photos under their own names and one more named with Latin-1 bytes."""
    root.mkdir(parents=True)
    for p in photos[:n]:
        shutil.copy(p, root / p.name)
    target = os.fsencode(root) + b"/" + LATIN1
    try:
        with open(target, "wb") as f:
            f.write(photos[n].read_bytes())
    except OSError as exc:  # e.g. a file system that stores names as UTF-16 (NTFS, APFS)
        pytest.skip(f"this file system refuses a name that is not UTF-8: {exc}")
    return root


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main([*argv, "--no-progress"])
    out = capsys.readouterr()
    return rc, out.out, out.err


# --------------------------------------------------------------- names that are not UTF-8


def test_display_path_escapes_only_the_bytes_that_are_not_utf8():
    held = os.fsdecode(b"/photos/" + LATIN1)  # what os.listdir gives: a surrogate escape
    assert held == "/photos/caf\udce9.jpg"
    assert display_path(held) == "/photos/" + SHOWN
    assert display_path(Path(held)) == "/photos/" + SHOWN
    assert display_path(b"/photos/" + LATIN1) == "/photos/" + SHOWN
    assert display_path("/photos/café.jpg") == "/photos/café.jpg"  # valid UTF-8: unchanged
    assert display_path("plain.jpg") == "plain.jpg"
    assert os.fsencode(held) == b"/photos/" + LATIN1  # the str kept opens the same bytes


def test_a_latin1_file_name_is_decoded_cached_and_keyed_by_its_bytes(tmp_path, photos):
    folder = _latin1_folder(tmp_path / "f", photos)
    paths, _, _ = scan_image_folder(folder)
    assert len(paths) == 6 and os.fsencode(paths[-1]).endswith(LATIN1)
    key = cache_key(paths, 32)  # hashing the name raised UnicodeEncodeError before
    assert key != cache_key(paths[:-1], 32) and len(key) == 32
    first = decode_to_cache(paths, 32, tmp_path / "c", progress=False)
    again = decode_to_cache(paths, 32, tmp_path / "c", progress=False)  # the cache entry
    assert first.kept.tolist() == again.kept.tolist() == list(range(6))
    assert np.array_equal(np.asarray(first.images), np.asarray(again.images))


def test_embed_and_neighbors_write_a_latin1_name_escaped(tmp_path, photos, checkpoint, capsys):
    folder = _latin1_folder(tmp_path / "f", photos)
    for out in ("e.csv", "e.npz"):
        rc, stdout, err = _run(capsys, "embed", "--checkpoint", str(checkpoint), "--data",
                               str(folder), "--out", str(tmp_path / out))
        assert rc == 0, err
        assert stdout == f"embed: 6 images x 512 features -> {tmp_path / out}\n"
    with open(tmp_path / "e.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    assert sorted(r[0] for r in rows[1:]) == sorted(
        [str(folder / p.name) for p in photos[:5]] + [f"{folder}/{SHOWN}"])
    assert np.load(tmp_path / "e.npz")["paths"].tolist() == [r[0] for r in rows[1:]]

    rc, stdout, err = _run(capsys, "neighbors", "--checkpoint", str(checkpoint), "--data",
                           str(folder), "--query-all", "--k", "2", "--out",
                           str(tmp_path / "n.json"))
    assert rc == 0, err
    record = json.loads((tmp_path / "n.json").read_text(encoding="utf-8"))
    assert f"{folder}/{SHOWN}" in [r["path"] for r in record["neighbors"]]
    rc, _, err = _run(capsys, "neighbors", "--checkpoint", str(checkpoint), "--data",
                      str(folder), "--query-all", "--k", "2", "--out", str(tmp_path / "n.csv"))
    assert rc == 0, err
    with open(tmp_path / "n.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["rank"] for r in rows if r["path"] == f"{folder}/{SHOWN}"] == ["1", "2"]

    query = os.fsdecode(os.fsencode(folder) + b"/" + LATIN1)
    rc, stdout, err = _run(capsys, "neighbors", "--checkpoint", str(checkpoint), "--data",
                           str(folder), "--query", query, "--k", "2", "--out",
                           str(tmp_path / "sheet.png"))
    assert rc == 0, err
    assert f"neighbors: {folder}/{SHOWN} -> " in stdout  # the sheet's captions too
    assert Image.open(tmp_path / "sheet.png").size[0] > 0


def test_a_damaged_latin1_file_is_named_escaped_in_the_warning(tmp_path, photos, checkpoint,
                                                              capsys):
    (tmp_path / "d" / "test" / "x").mkdir(parents=True)
    train = _latin1_folder(tmp_path / "d" / "train" / "x", photos, n=6)
    for p in photos[7:9]:
        shutil.copy(p, tmp_path / "d" / "test" / "x" / p.name)
    with open(os.fsencode(train) + b"/bad\xe9.jpg", "wb") as f:
        f.write(b"not an image")
    rc, _, err = _run(capsys, "embed", "--checkpoint", str(checkpoint), "--data",
                      str(tmp_path / "d"), "--out", str(tmp_path / "e.csv"))
    assert rc == 0, err
    assert err == (f"simsiam: warning: decode train: skipped 1 of 8 image files that cannot be "
                   "decoded (they are left out of the run; pass --strict to stop on the first "
                   f"instead):\n  {train}/bad\\xe9.jpg: UnidentifiedImageError: cannot "
                   f"identify image file '{train}/bad\\xe9.jpg'\n")
    assert "\\udc" not in err


def test_a_latin1_class_folder_is_written_escaped_with_the_linear_probe(tmp_path):
    write_linear_result(tmp_path, nn.Linear(4, 2), ["chat", os.fsdecode(b"caf\xe9")],
                        {"top1": 50.0})
    with safe_open(str(tmp_path / "classifier.safetensors"), framework="pt") as f:
        assert json.loads(f.metadata()["classes"]) == ["chat", "caf\\xe9"]


# --------------------------------------------------------------- text files not in UTF-8


def _not_utf8(what: str, path: Path, where: str, byte: str, reason: str, looks: str,
              iconv: str) -> str:
    return (f"{what} '{path}' is not UTF-8 text ({where}: byte 0x{byte}, {reason}; {looks}); "
            f"save it as UTF-8 (an editor's 'save as' encoding, or iconv -f {iconv} -t UTF-8 "
            "OLD > NEW) and run again")


LATIN = ("it looks like Latin-1 or Windows-1252", "WINDOWS-1252")


def test_latin1_classnames_and_templates_are_refused_in_one_line(tmp_path, capsys):
    names = tmp_path / "names.txt"
    names.write_bytes("chat\ncafé\n".encode("latin-1"))
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes("a photo of a {}.\nune photo d'un {} à Paris\n".encode("latin-1"))
    run = tmp_path / "no-run"  # never read: the text files are refused first
    rc, out, err = _run(capsys, "zeroshot", "--checkpoint", str(run), "--data", str(tmp_path),
                        "--classnames", str(names))
    assert (rc, out) == (2, "")
    assert err == "simsiam zeroshot: error: " + _not_utf8(
        "--classnames file", names, "line 2, byte offset 8", "e9", "invalid continuation byte",
        *LATIN) + "\n"
    rc, out, err = _run(capsys, "zeroshot", "--checkpoint", str(run), "--data", str(tmp_path),
                        "--templates", str(prompts))
    assert (rc, out) == (2, "")
    assert err == "simsiam zeroshot: error: " + _not_utf8(
        "--templates file", prompts, "line 2, byte offset 35", "e0", "invalid continuation byte",
        *LATIN) + "\n"


def test_utf8_text_with_a_bom_and_crlf_is_read_and_utf16_is_named(tmp_path):
    names = tmp_path / "names.txt"
    names.write_bytes(b"\xef\xbb\xbfchat\r\ncaf\xc3\xa9\r\n")  # Notepad's UTF-8
    assert given_class_names(str(names)) == ["chat", "café"]
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(b"\xef\xbb\xbfa photo of a {}.\r\n")
    assert templates(str(prompts), ["chat"]) == ["a photo of a {}."]
    wide = tmp_path / "wide.txt"
    wide.write_bytes("chat\n".encode("utf-16"))  # BOM ff fe
    with pytest.raises(DataError) as exc:
        read_utf8_text(wide, "--classnames file")
    assert str(exc.value) == _not_utf8("--classnames file", wide, "line 1, byte offset 0",
                                       "ff", "invalid start byte",
                                       "it starts with a UTF-16 byte order mark", "UTF-16")


def test_caption_tables_and_configs_share_the_reader_and_its_message(tmp_path, photos):
    table = tmp_path / "captions.csv"
    shutil.copy(photos[0], tmp_path / "a.jpg")
    table.write_bytes("image,caption\na.jpg,un café\n".encode("latin-1"))
    with pytest.raises(DataError) as exc:
        read_caption_table(table)
    assert str(exc.value) == _not_utf8("caption table", table, "line 2, byte offset 26", "e9",
                                       "invalid continuation byte", *LATIN)
    config = tmp_path / "run.yaml"
    config.write_bytes("train:\n  out: runs/café\n".encode("latin-1"))
    with pytest.raises(ConfigError) as exc:
        load_config(config)
    assert str(exc.value) == _not_utf8("config file", config, "line 2, byte offset 22", "e9",
                                       "invalid continuation byte", *LATIN)
    config.write_bytes(b"\xef\xbb\xbftrain:\n  epochs: 3\n")
    assert load_config(config).train.epochs == 3


# ------------------------------------------------------------------ image formats


def _formats_folder(root: Path, photos: list[Path]) -> dict[str, list[str]]:
    """10 .jpg, 2 .jfif, 2 .avif (where Pillow writes AVIF), 1 .HEIC and 1 .CR2 (neither
    readable here) from real photos; returns the names by kind."""
    root.mkdir()
    made: dict[str, list[str]] = {"read": [], "unreadable": []}
    for i, p in enumerate(photos[:14]):
        im = Image.open(p).convert("RGB")
        if i < 10:
            name, fmt = f"p{i:02d}.jpg", "JPEG"
        elif i < 12:
            name, fmt = f"p{i:02d}.jfif", "JPEG"
        elif features.check("avif"):
            name, fmt = f"p{i:02d}.avif", "AVIF"
        else:
            continue
        im.save(root / name, format=fmt)
        made["read"].append(name)
    shutil.copy(photos[14], root / "IMG_0001.HEIC")  # named .HEIC: never opened here
    (root / "DSC_0002.CR2").write_bytes(b"II*\x00\x10\x00\x00\x00CR")
    made["unreadable"] = ["DSC_0002.CR2", "IMG_0001.HEIC"]
    return made


def test_jfif_and_avif_are_indexed_and_unreadable_images_are_named(tmp_path, photos,
                                                                  checkpoint, capsys):
    if HEIF_PLUGIN:
        pytest.skip("pillow-heif is installed here, so .heic files are read")
    folder = tmp_path / "f"
    made = _formats_folder(folder, photos)
    avif = features.check("avif")  # Pillow 11.3+ built with libavif reads and writes AVIF
    assert len(made["read"]) == (14 if avif else 12)
    assert {".jfif", ".jpe"} <= IMAGE_EXTENSIONS and (".avif" in IMAGE_EXTENSIONS) == avif
    expected = (f"data folder '{folder}': 2 file(s) look like images but cannot be read by "
                "the installed Pillow and are left out (1 .cr2, 1 .heic: 'DSC_0002.CR2', "
                "'IMG_0001.HEIC'); convert them to JPEG or PNG (HEIC/HEIF: or pip install "
                "pillow-heif, which simsiam then uses; camera raw: export them from a raw "
                "converter such as darktable or dcraw)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        paths, _, _ = scan_image_folder(folder)
    assert [str(w.message) for w in caught if w.category is DataWarning] == [expected]
    assert sorted(p.name for p in paths) == sorted(made["read"])
    # the stream path reads the headers of the same files
    kept, sizes = check_headers(paths, [str(p) for p in paths], strict=True)
    assert len(kept) == len(paths) and all(s == Image.open(p).size
                                           for s, p in zip(sizes, paths, strict=True))
    rc, _, err = _run(capsys, "embed", "--checkpoint", str(checkpoint), "--data", str(folder),
                      "--out", str(tmp_path / "e.csv"))
    assert rc == 0, err
    assert f"simsiam: warning: {expected}\n" in err
    with open(tmp_path / "e.csv", encoding="utf-8", newline="") as f:
        written = sorted(Path(r["path"]).name for r in csv.DictReader(f))
    assert written == sorted(made["read"])


def test_a_folder_of_only_unreadable_images_is_refused_naming_them(tmp_path, photos,
                                                                   checkpoint, capsys):
    if HEIF_PLUGIN:
        pytest.skip("pillow-heif is installed here, so .heic files are read")
    folder = tmp_path / "phone"
    (folder / "trip").mkdir(parents=True)
    for i in range(4):
        shutil.copy(photos[i], folder / "trip" / f"IMG_{i:04d}.heic")
    rc, out, err = _run(capsys, "embed", "--checkpoint", str(checkpoint), "--data",
                        str(folder), "--out", str(tmp_path / "e.csv"))
    assert (rc, out) == (2, "")
    looked = ", ".join(sorted(IMAGE_EXTENSIONS))
    assert err == (f"simsiam embed: error: data folder '{folder}' holds no image files that "
                   f"can be read here (looked for {looked} in it and its subfolders); 4 file(s) "
                   "look like images but cannot be read by the installed Pillow and are left "
                   "out (4 .heic: 'trip/IMG_0000.heic', 'trip/IMG_0001.heic', "
                   "'trip/IMG_0002.heic' and 1 more); convert them to JPEG or PNG (HEIC/HEIF: "
                   "or pip install pillow-heif, which simsiam then uses)\n")
    assert not (tmp_path / "e.csv").exists()

"""What travels to a lent GPU machine (benchmarks/gpu_prep.py, gpu_check.sh; issue 27).

The GPU check itself runs only there (and, as a dry run on the CPU, with ``make
gpu-dryrun``: BENCHMARKS.md "GPU"); these tests check, without a network or a GPU, that
the carried wheels cover every dependency the GPU image lacks, that the checks of the
prep script can fail, and that the check script's outputs fit what comes back.
"""

from __future__ import annotations

import io
import re
import subprocess
import tarfile
import zipfile

import pytest
from packaging.requirements import Requirement

from .conftest import REPO, load_script

BENCH = REPO / "benchmarks"


@pytest.fixture(scope="module")
def prep():
    return load_script("bench_gpu_prep", BENCH / "gpu_prep.py")


def test_the_wheels_cover_every_dependency_the_gpu_image_lacks(prep):
    pins, image = prep.read_pins(prep.WHEELS_LIST), prep.read_names(prep.IMAGE_LIST)
    reqs = prep.project_requirements()
    assert prep.uncovered(reqs, image, pins) == []
    # the three the issue names are missing there and carried; torch is never carried
    assert {"omegaconf", "open-clip-torch", "webdataset"} <= set(pins) - image
    assert "torch" in image and "torch" not in pins
    assert {"pytest", "pytest-timeout"} <= {prep.canonical(r.name) for r in reqs}


def test_uncovered_names_a_missing_dependency_and_a_pin_outside_its_range(prep):
    reqs = [Requirement("Foo_Bar>=1"), Requirement("baz<2"), Requirement("qux")]
    problems = prep.uncovered(reqs, {"foo-bar"}, {"baz": "2.1"})
    assert problems == ["baz==2.1 is outside baz<2",
                        "qux (qux) is neither in the GPU image nor in the wheels"]


def test_read_pins_refuses_an_unpinned_line(prep, tmp_path):
    path = tmp_path / "wheels.txt"
    path.write_text("# comment\nA_b==1.0  # why\n\nc>=2\n")
    with pytest.raises(ValueError, match=r"wheels.txt:4: 'c>=2' is not NAME==VERSION"):
        prep.read_pins(path)
    path.write_text("A_b==1.0  # why\n")
    assert prep.read_pins(path) == {"a-b": "1.0"}


def test_requires_dist_keeps_what_applies_on_cpython_312_linux(prep):
    metadata = "\n".join([
        "Metadata-Version: 2.1", "Name: x",
        "Requires-Dist: a", 'Requires-Dist: b; extra == "dev"',
        'Requires-Dist: c; python_version < "3.8"', 'Requires-Dist: d; sys_platform == "win32"',
        'Requires-Dist: e>=1; python_version >= "3.10"', "Description: Requires-Dist: f"])
    assert [str(r) for r in prep.requires_dist(metadata)] == ["a", 'e>=1; python_version >= "3.10"']


def test_missing_requirements_reads_a_wheels_metadata(prep, tmp_path):
    wheel = tmp_path / "x-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("x-1.0.dist-info/METADATA", "Name: x\nRequires-Dist: numpy\nRequires-Dist: "
                   "braceexpand\n")
    assert prep.missing_requirements([wheel], {"numpy", "x"}) == ["x-1.0-py3-none-any.whl: "
                                                                   "braceexpand"]
    assert prep.missing_requirements([wheel], {"numpy", "braceexpand"}) == []


@pytest.mark.parametrize("name, fits", [
    ("a-1-py3-none-any.whl", True), ("a-1-py2.py3-none-any.whl", True),
    ("a-1-py2-none-any.whl", False),
    ("wcwidth-0.9.5-cp310-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl", True),
    ("a-1-cp313-abi3-manylinux_2_17_x86_64.whl", False),
    ("a-1-cp312-cp312-manylinux_2_17_x86_64.whl", True),
    ("a-1-cp311-cp311-manylinux_2_17_x86_64.whl", False),
    ("a-1-cp312-cp312-manylinux_2_28_aarch64.whl", False),
    ("a-1-cp312-cp312-win_amd64.whl", False)])
def test_wheel_fits_cpython_312_x86_64(prep, name, fits):
    assert prep.wheel_fits(name) is fits


def test_write_tar_is_reproducible_and_kept_while_its_stamp_matches(prep, tmp_path):
    (tmp_path / "b.jpg").write_bytes(b"bee")
    (tmp_path / "a.jpg").write_bytes(b"ay!")
    files = [(tmp_path / "b.jpg", "photos/b.jpg"), (tmp_path / "a.jpg", "photos/a.jpg")]
    dest = tmp_path / "out.tar.gz"
    stamp = prep.stamp_of(files, "sum\n")
    assert stamp == "sum\nphotos/b.jpg 3\nphotos/a.jpg 3\n"
    assert prep.write_tar(dest, files, stamp, compress=True)
    first = dest.read_bytes()
    assert not prep.write_tar(dest, files, stamp, compress=True)  # stamp matches: kept
    assert prep.write_tar(dest, files, stamp + "x", compress=True)  # changed: rewritten
    assert dest.read_bytes() == first  # same bytes (sorted, times 0, gzip mtime 0)
    with tarfile.open(fileobj=io.BytesIO(first), mode="r:gz") as tar:
        assert tar.getnames() == ["photos/a.jpg", "photos/b.jpg"]
        assert tar.extractfile("photos/b.jpg").read() == b"bee"
        assert {m.mtime for m in tar.getmembers()} == {0}


def test_the_carried_paths_are_ignored_by_git(prep):
    assert prep.not_ignored(prep.CARRY) == []
    assert prep.not_ignored(("benchmarks",)) == ["benchmarks"]


def test_gpu_check_writes_few_plain_output_files():
    """What comes back from $OUT: at most 8 files, plain names, no folders."""
    text = (BENCH / "gpu_check.sh").read_text()
    names = set(re.findall(r"\b\d\d-[A-Za-z0-9._-]+\.(?:txt|jsonl)\b", text))
    assert len(names) == 8, sorted(names)
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", n) for n in names)
    assert "$OUT/" in text and not re.search(r"\$OUT/[^\s\"']*/", text)


def test_gpu_check_refuses_a_bad_device_before_doing_anything(tmp_path):
    proc = subprocess.run(["bash", str(BENCH / "gpu_check.sh"), "--device", "gpu"],
                          capture_output=True, text=True, cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "OUT": str(tmp_path / "out")})
    assert proc.returncode == 2
    assert "--device must be cpu or cuda, not 'gpu'" in proc.stderr
    assert not (tmp_path / "out").exists()

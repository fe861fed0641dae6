"""Prepare what travels to a lent GPU machine for ``benchmarks/gpu_check.sh`` (issue 27).

    make gpu-prep          # = python benchmarks/gpu_prep.py

That machine (Python 3.12, its own torch with CUDA) reaches no package registry, and the
data folder beside the project (``../shared``) does not travel with the working tree. This
script writes, into ignored paths of the repository, everything the check needs:

- ``.whl/``: the wheels of ``benchmarks/gpu_wheels.txt`` for CPython 3.12 on x86-64 (the
  packages the machine's image, ``benchmarks/gpu_image.txt``, lacks), each one's
  ``Requires-Dist`` checked against the two lists, one version of each;
- ``.gpu/cifar10-jpeg.tar.gz``: CIFAR-10's 60,000 JPEGs (``train/`` and ``test/`` of
  ``../shared/data/cifar10-jpeg``) as one archive;
- ``.gpu/photos.tar``: the first ``--photos`` Flickr photos (sorted by name) of
  ``../shared/data/flickr8k-1k/images``, for the stream pipeline's bench.

It is idempotent: a wheel already downloaded and an archive whose stamp (its sources'
names and sizes, or the data's checksum file) still matches are kept. Last it prints the
sizes and what travels (the tracked and untracked-not-ignored files plus the carried
``.whl`` and ``.gpu``), and stops with an error when that is over 64 MiB. Needs Python >=
3.11 (tomllib) and ``packaging`` (both in the project's ``.venv``).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import tomllib
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
WHEELS_LIST = BENCH / "gpu_wheels.txt"
IMAGE_LIST = BENCH / "gpu_image.txt"
CARRY = (".whl", ".gpu")
TRAVEL_LIMIT = 64 << 20  # bytes: what travels to the device machine at most
TARGET_PYTHON = "3.12"
TARGET_ENV = {"python_version": TARGET_PYTHON, "python_full_version": "3.12.3",
              "sys_platform": "linux", "platform_system": "Linux",
              "platform_machine": "x86_64", "implementation_name": "cpython",
              "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")
# The test step on the GPU needs these beside the runtime dependencies (ruff: lint only).
GPU_DEV_NEEDS = ("pytest", "pytest-timeout")


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503): lower case, runs of -_. as -."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_names(path: Path) -> set[str]:
    """Canonical names in a whitespace-separated list file (``#`` starts a comment)."""
    text = "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())
    return {canonical(word) for word in text.split()}


def read_pins(path: Path) -> dict[str, str]:
    """``{canonical name: version}`` of a ``NAME==VERSION`` per line file.

    Raises:
        ValueError: a line is not ``NAME==VERSION`` (names the file and line).
    """
    pins = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        name, sep, version = entry.partition("==")
        if not sep or not name.strip() or not version.strip():
            raise ValueError(f"{path}:{n}: {entry!r} is not NAME==VERSION; pin one version")
        pins[canonical(name.strip())] = version.strip()
    return pins


def project_requirements(pyproject: Path = REPO / "pyproject.toml") -> list[Requirement]:
    """The runtime dependencies of ``pyproject.toml`` plus the dev ones the GPU tests need."""
    project = tomllib.loads(pyproject.read_text())["project"]
    dev = [Requirement(r) for r in project["optional-dependencies"]["dev"]]
    return ([Requirement(r) for r in project["dependencies"]]
            + [r for r in dev if canonical(r.name) in GPU_DEV_NEEDS])


def uncovered(requirements: list[Requirement], image: set[str],
              pins: dict[str, str]) -> list[str]:
    """Problems with carrying ``requirements``: each one neither in ``image`` nor pinned,
    and each pin outside its requirement's version range. Empty when all is well."""
    problems = []
    for req in requirements:
        name = canonical(req.name)
        if name in pins:
            if not req.specifier.contains(pins[name], prereleases=True):
                problems.append(f"{name}=={pins[name]} is outside {req}")
        elif name not in image:
            problems.append(f"{name} ({req}) is neither in the GPU image nor in the wheels")
    return problems


def requires_dist(metadata: str) -> list[Requirement]:
    """The ``Requires-Dist`` entries of a wheel's METADATA that apply on the GPU machine
    (CPython 3.12 on Linux x86-64, no extras)."""
    reqs = [Requirement(line.split(":", 1)[1].strip()) for line in metadata.splitlines()
            if line.startswith("Requires-Dist:")]
    return [r for r in reqs if r.marker is None or r.marker.evaluate(TARGET_ENV)]


def wheel_metadata(path: Path) -> str:
    """The ``*.dist-info/METADATA`` text of the wheel at ``path``.

    Raises:
        ValueError: the file holds no METADATA (not a wheel).
    """
    with zipfile.ZipFile(path) as z:
        names = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        if len(names) != 1:
            raise ValueError(f"{path}: no single *.dist-info/METADATA; not a wheel")
        return z.read(names[0]).decode("utf-8", "replace")


def wheel_fits(filename: str) -> bool:
    """Whether a wheel installs on CPython 3.12 x86-64 Linux by its file name's tags:
    pure Python (``py3-none-any``), the stable ABI from an older CPython (``cp3N-abi3``),
    or built for ``cp312``; binary ones for a manylinux x86-64 platform."""
    parts = filename[:-len(".whl")].split("-")
    py, abi, plat = parts[-3], parts[-2], parts[-1]
    if abi == "none" and plat == "any":
        return any(tag in ("py3", "py2.py3") or tag.startswith("py3") for tag in py.split("."))
    arch_ok = all("x86_64" in p and p.startswith("manylinux") for p in plat.split("."))
    cps = [int(t[3:]) for t in py.split(".") if t.startswith("cp3") and t[3:].isdigit()]
    return arch_ok and bool(cps) and ((abi == "abi3" and min(cps) <= 12) or 12 in cps)


def wheel_name_version(filename: str) -> tuple[str, str]:
    """(canonical name, version) from a wheel's file name."""
    name, version = filename.split("-")[:2]
    return canonical(name), version


def download_wheels(pins: dict[str, str], dest: Path) -> list[Path]:
    """The pinned wheels in ``dest``, downloaded with pip for CPython 3.12 x86-64 where
    missing; wheels of other names or versions are removed (one version of each).

    Raises:
        RuntimeError: pip failed, or a wheel does not install on the GPU machine.
    """
    dest.mkdir(exist_ok=True)
    for path in dest.glob("*.whl"):
        name, version = wheel_name_version(path.name)
        if pins.get(name) != version:
            print(f"removing {path.name} (not pinned in {WHEELS_LIST.name})")
            path.unlink()
    have = {wheel_name_version(p.name)[0] for p in dest.glob("*.whl")}
    for name, version in pins.items():
        if name in have:
            continue
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps",
               "--only-binary=:all:", "--python-version", TARGET_PYTHON, "--implementation",
               "cp", "-d", str(dest), f"{name}=={version}"]
        for plat in PLATFORMS:
            cmd[-1:-1] = ["--platform", plat]
        print("downloading", f"{name}=={version}", flush=True)
        if subprocess.run(cmd).returncode != 0:
            raise RuntimeError(f"pip download {name}=={version} failed (command: {cmd})")
    wheels = sorted(dest.glob("*.whl"))
    misfits = [p.name for p in wheels if not wheel_fits(p.name)]
    if misfits:
        raise RuntimeError(f"not installable on CPython 3.12 x86-64: {misfits}")
    return wheels


def missing_requirements(wheels: list[Path], available: set[str]) -> list[str]:
    """``wheel: requirement`` for each Requires-Dist of ``wheels`` (applying on the GPU
    machine) whose distribution is not in ``available``."""
    return [f"{w.name}: {req}" for w in wheels for req in requires_dist(wheel_metadata(w))
            if canonical(req.name) not in available]


def stamp_of(files: list[tuple[Path, str]], extra: str = "") -> str:
    """A stamp naming each archived file (its name in the archive and size) and ``extra``."""
    lines = [f"{arc} {path.stat().st_size}" for path, arc in files]
    return extra + "\n".join(lines) + "\n"


def write_tar(dest: Path, files: list[tuple[Path, str]], stamp: str, compress: bool) -> bool:
    """Write ``files`` (``(path, name in the archive)``) as a tar (gzip when ``compress``)
    at ``dest``, reproducibly (sorted, times 0, owner root), atomically, with the SHA-256
    of ``stamp`` in ``dest.stamp`` beside it (it travels too: 64 hex digits, not the list);
    kept as it is when that stamp already matches. Returns whether the archive was
    (re)written."""
    stamp_path = dest.with_name(dest.name + ".stamp")
    digest = hashlib.sha256(stamp.encode()).hexdigest() + "\n"
    if dest.exists() and stamp_path.exists() and stamp_path.read_text() == digest:
        return False
    tmp = dest.with_name(dest.name + ".tmp")
    with open(tmp, "wb") as raw:
        stream = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if compress else raw
        with tarfile.open(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path, arc in sorted(files, key=lambda f: f[1]):
                info = tarfile.TarInfo(arc)
                info.size, info.mode, info.mtime = path.stat().st_size, 0o644, 0
                tar.addfile(info, io.BytesIO(path.read_bytes()))
        if compress:
            stream.close()
    os.replace(tmp, dest)
    stamp_path.write_text(digest)
    return True


def cifar_files(root: Path) -> list[tuple[Path, str]]:
    """Every JPEG of ``root``/train and ``root``/test, named ``cifar10-jpeg/<split>/...``.

    Raises:
        FileNotFoundError: ``root`` lacks train/ or test/.
    """
    out = []
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise FileNotFoundError(f"{root / split} is missing: pass --cifar the CIFAR-10 "
                                    "JPEG folder with train/ and test/ (../shared/data/"
                                    "cifar10-jpeg)")
        out += [(p, f"cifar10-jpeg/{p.relative_to(root)}")
                for p in sorted((root / split).rglob("*.jpg"))]
    return out


def photo_files(folder: Path, count: int) -> list[tuple[Path, str]]:
    """The first ``count`` JPEGs of ``folder`` by name, named ``photos/<name>``.

    Raises:
        FileNotFoundError: ``folder`` has fewer than ``count`` JPEGs.
    """
    files = sorted(folder.glob("*.jpg"))
    if len(files) < count:
        raise FileNotFoundError(f"{folder} has {len(files)} JPEGs, fewer than --photos "
                                f"{count}: pass --flickr the photos' folder or fewer --photos")
    return [(p, f"photos/{p.name}") for p in files[:count]]


def tree_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (0 when it does not exist)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def working_tree_bytes(repo: Path = REPO) -> int:
    """Bytes of what travels without being carried: tracked and untracked-not-ignored
    files (symbolic links travel as links and count nothing here)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=repo, capture_output=True,
                            check=True).stdout.decode().split("\0")
    paths = [repo / p for p in listed if p]
    return sum(p.stat().st_size for p in paths if p.is_file() and not p.is_symlink())


def not_ignored(paths: tuple[str, ...], repo: Path = REPO) -> list[str]:
    """Those of ``paths`` that git does not ignore (they would travel twice, uncarried)."""
    return [p for p in paths if subprocess.run(["git", "check-ignore", "-q", p],
                                               cwd=repo).returncode != 0]


def mib(n: int) -> str:
    """``n`` bytes in MiB, one decimal."""
    return f"{n / (1 << 20):.1f} MiB"


def main(argv: list[str] | None = None) -> int:
    """Download the wheels, build the data archives, print sizes; 0 when all fits."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = REPO.parent / "shared" / "data"
    ap.add_argument("--cifar", type=Path, default=shared / "cifar10-jpeg",
                    help="CIFAR-10 JPEG folder with train/ and test/")
    ap.add_argument("--flickr", type=Path, default=shared / "flickr8k-1k" / "images",
                    help="folder of photos for the stream pipeline's bench")
    ap.add_argument("--photos", type=int, default=500, help="photos carried (default 500)")
    args = ap.parse_args(argv)
    pins, image = read_pins(WHEELS_LIST), read_names(IMAGE_LIST)
    unignored = not_ignored(CARRY)
    if unignored:
        print(f"gpu-prep: {unignored} must be ignored by git (.gitignore): they are carried",
              file=sys.stderr)
        return 1
    problems = uncovered(project_requirements(), image, pins)
    wheels = download_wheels(pins, REPO / ".whl")
    problems += [f"{m}: neither in the GPU image nor in the wheels"
                 for m in missing_requirements(wheels, image | set(pins))]
    if problems:
        print("gpu-prep: " + "\n  ".join(["what travels would not install:"] + problems),
              file=sys.stderr)
        return 1
    data = REPO / ".gpu"
    data.mkdir(exist_ok=True)
    checksum = args.cifar.with_name(args.cifar.name + ".sha256")
    cifar, photos = cifar_files(args.cifar), photo_files(args.flickr, args.photos)
    extra = checksum.read_text() if checksum.exists() else ""
    for dest, files, stamp, gz in (
            (data / "cifar10-jpeg.tar.gz", cifar, stamp_of(cifar, extra), True),
            (data / "photos.tar", photos, stamp_of(photos), False)):
        state = "written" if write_tar(dest, files, stamp, gz) else "up to date"
        print(f"{dest.relative_to(REPO)}: {state}, {len(files):,} files, "
              f"{mib(dest.stat().st_size)}", flush=True)
    print(f".whl/: {len(wheels)} wheels, {mib(tree_bytes(REPO / '.whl'))}: "
          + ", ".join(p.name for p in wheels))
    carried = sum(tree_bytes(REPO / c) for c in CARRY)
    tree = working_tree_bytes()
    total = tree + carried
    print(f"travels: working tree {mib(tree)} + carried {' '.join(CARRY)} {mib(carried)} = "
          f"{mib(total)} of {mib(TRAVEL_LIMIT)}")
    if total > TRAVEL_LIMIT:
        print(f"gpu-prep: {mib(total)} is over what travels ({mib(TRAVEL_LIMIT)}): carry "
              "fewer --photos or remove large untracked files", file=sys.stderr)
        return 1
    print('device call: run(command="bash benchmarks/gpu_check.sh", carry=[".whl", ".gpu"], '
          "timeout_s=600)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Shared fixtures: the real CIFAR-10 JPEG folder beside the project, a private cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CIFAR_DIR = REPO.parent / "shared" / "data" / "cifar10-jpeg"


@pytest.fixture(autouse=True, scope="session")
def _cache_dir(tmp_path_factory):
    """Decoded caches of the test session go to the project's .cache (never into data)."""
    os.environ.setdefault("SIMSIAM_CACHE_DIR", str(REPO / ".cache"))
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield


@pytest.fixture(scope="session")
def cifar_dir() -> Path:
    if not CIFAR_DIR.is_dir():
        pytest.skip(f"real CIFAR-10 images not found at {CIFAR_DIR}")
    return CIFAR_DIR


FLICKR_DIR = REPO.parent / "shared" / "data" / "flickr8k-1k" / "images"


@pytest.fixture(scope="session")
def flickr_dir() -> Path:
    """1,000 real Flickr photographs in a flat folder (read-only; never copied here)."""
    if not FLICKR_DIR.is_dir():
        pytest.skip(f"real photographs not found at {FLICKR_DIR}")
    return FLICKR_DIR


def save_random_backbone(path: Path, image_size: int) -> Path:
    """A randomly initialised ResNet-18 (7x7 stem, seed 0) exported to ``path`` as a simsiam
    backbone file for ``image_size`` px inputs; returns ``path``."""
    from simsiam.models.backbones import backbone_state_dict, build_backbone
    from simsiam.train.checkpoint import save_backbone

    torch.manual_seed(0)
    save_backbone(backbone_state_dict(build_backbone("resnet18", "imagenet")), path,
                  metadata={"image_size": str(image_size), "normalize": "imagenet",
                            "seed": "0", "format": "torchvision", "arch": "resnet18",
                            "stem": "imagenet"})
    return path


def load_script(name: str, path: Path):
    """Import a script that is not in a package (docs/gen_reference.py, benchmarks/*.py) as
    module ``name`` and return it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

"""The demo's and the benchmarks' default data and presets (``simsiam demo``, ``bench``,
``reproduce``, ``compare``).

The data is the workplace's copy beside the checkout (``make demo`` runs from the
repository root): CIFAR-10 as JPEGs, else torchvision's CIFAR-10 download; for a method
that learns from captions, 1,000 Flickr8k photographs with 5 captions each (there is no
download to fall back on). A method's demo preset is the shipped ``<method>-cpu`` preset
when there is one, else ``demo-cpu`` (with the method's own section).
"""

from __future__ import annotations

from pathlib import Path

from simsiam.config import preset_names
from simsiam.errors import SimSiamError
from simsiam.methods import METHODS

__all__ = ["DEFAULT_DEMO_PRESET", "SHARED_CIFAR_DIR", "SHARED_FLICKR_CAPTIONS",
           "default_image_data", "demo_data", "demo_preset"]

SHARED_CIFAR_DIR = Path("..") / "shared" / "data" / "cifar10-jpeg"
SHARED_FLICKR_CAPTIONS = Path("..") / "shared" / "data" / "flickr8k-1k" / "captions.csv"
DEFAULT_DEMO_PRESET = "demo-cpu"


def default_image_data(data: str | None = None) -> str:
    """``data`` when given, else the shared CIFAR-10 folder when present, else
    ``cifar10`` (torchvision's download)."""
    if data:
        return data
    return str(SHARED_CIFAR_DIR) if SHARED_CIFAR_DIR.is_dir() else "cifar10"


def demo_preset(method: str | None) -> str:
    """The preset ``simsiam demo --method METHOD`` runs: ``METHOD-cpu`` when shipped
    (``clip-cpu``), else ``demo-cpu``; None (no --method): ``demo-cpu``."""
    if method is not None and f"{method}-cpu" in preset_names():
        return f"{method}-cpu"
    return DEFAULT_DEMO_PRESET


def demo_data(data: str | None, method: str | None) -> str:
    """The demo's data: ``data`` when given; for a method that learns from captions
    (``batch_kind == "captions"``) the shared Flickr8k captions; else
    :func:`default_image_data`.

    Raises:
        SimSiamError: the captions are needed and not there (says to pass --data).
    """
    if data:
        return data
    if method is not None and METHODS[method].batch_kind == "captions":
        if not SHARED_FLICKR_CAPTIONS.is_file():
            raise SimSiamError(f"the {method.upper()} demo reads '{SHARED_FLICKR_CAPTIONS}' (1,000 "
                               "Flickr8k photographs with captions), which is not here: pass "
                               "--data with a caption table (CSV/TSV/JSONL: image, caption)")
        return str(SHARED_FLICKR_CAPTIONS)
    return default_image_data()

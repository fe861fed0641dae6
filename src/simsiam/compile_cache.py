"""Where ``torch.compile`` keeps what it compiled, so that a second run starts warm.

PyTorch's inductor caches compiled graphs on disk (its FX graph cache, on by default) in
``TORCHINDUCTOR_CACHE_DIR``, by default a folder under the system's temporary directory,
which many machines empty at boot. :func:`use_compile_cache` points it at the project's
cache directory (``$SIMSIAM_CACHE_DIR`` or ``~/.cache/simsiam``, see
:func:`simsiam.fileio.default_cache_dir`) unless the user chose one.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from simsiam.fileio import default_cache_dir

__all__ = ["use_compile_cache"]


def use_compile_cache() -> Path:
    """Set ``TORCHINDUCTOR_CACHE_DIR`` to ``<cache dir>/torch-compile`` unless it is set;
    returns the folder in use. Call before the first ``torch.compile`` runs. Also quiets
    inductor's "No CUDA runtime is found, using CUDA_HOME=..." line on every CPU compile."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    if not os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(default_cache_dir() / "torch-compile")
    return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])

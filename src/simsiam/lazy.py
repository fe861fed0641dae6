"""A package's public names imported from their modules on first use (PEP 562), so that
importing one torch-free leaf of a package (``simsiam.augment.config``, say) does not run
the package's torch modules. Used by the ``__init__`` of ``augment``, ``config``, ``data``,
``eval``, ``methods``, ``optim`` and ``train``."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["LazyExports"]


class LazyExports:
    """The public names of ``package``, each found in the module ``exports[name]`` of it.

    A package sets ``__getattr__ = LazyExports(__name__, _EXPORTS).attribute`` and
    ``__dir__`` to :meth:`names`; ``from simsiam.augment import RECIPES`` then imports
    ``simsiam.augment.recipes`` only.

    Args:
        package: the package's dotted name, e.g. ``"simsiam.augment"``.
        exports: public name -> the module (relative to ``package``) that defines it.
    """

    def __init__(self, package: str, exports: dict[str, str]) -> None:
        self.package, self.exports = package, exports

    def attribute(self, name: str) -> Any:
        """The public ``name``, its module imported now if it was not yet.

        Raises:
            AttributeError: ``name`` is not one of the package's public names.
        """
        if name not in self.exports:
            raise AttributeError(f"module {self.package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{self.package}.{self.exports[name]}"), name)

    def names(self) -> list[str]:
        """The package's public names, sorted (its ``__all__``)."""
        return sorted(self.exports)

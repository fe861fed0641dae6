"""Config overrides written on a command line: ``--set KEY=VALUE``.

:func:`parse_set` turns them into the ``overrides`` dict that
:func:`simsiam.config.load_config` takes (which checks every key and value).
"""

from __future__ import annotations

from typing import Any

import yaml

from simsiam.errors import ConfigError

__all__ = ["parse_set"]


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["optim.base_lr=0.4", ...]`` -> ``{"optim.base_lr": 0.4}`` (values read as YAML:
    ``null``, ``true``, numbers and lists as such; anything else a string).

    Raises:
        ConfigError: an item without ``=`` or without a key, naming it and the form.
    """
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: write KEY=VALUE, e.g. --set optim.base_lr=0.4")
        out[key.strip()] = yaml.safe_load(value)
    return out

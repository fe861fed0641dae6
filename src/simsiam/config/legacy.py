"""Config files written by simsiam 0.1 (flat ``model.*`` method keys), read as today's.

Up to 0.1 every method's settings sat directly under ``model`` (``model.dim``,
``model.temperature``, ``model.swav_queue_size``, ...) and SimSiam's fixed predictor lr
was ``optim.fix_pred_lr``. They now live in the method's own section ``model.<method>``.
A run directory's ``config.yaml`` from 0.1 is migrated when it is read (so ``--resume``
and ``simsiam knn`` keep working on old runs); a flat key given on the command line is
refused with its new name.
"""

from __future__ import annotations

from typing import Any

# Flat 0.1 key -> its name inside each method's section (a method not listed ignored it).
_SHARED_HEAD = {"model.dim": "dim", "model.proj_hidden_dim": "hidden_dim"}
MOVED: dict[str, dict[str, str]] = {
    "simsiam": {f"model.{k}": k for k in (
        "proj_layers", "proj_hidden_dim", "dim", "pred_hidden_dim", "stop_gradient",
        "predictor", "proj_hidden_bn", "proj_out_bn", "pred_hidden_bn", "pred_out_bn",
        "similarity", "symmetric")} | {"optim.fix_pred_lr": "fix_pred_lr"},
    "simclr": _SHARED_HEAD | {"model.temperature": "temperature"},
    "mocov2": _SHARED_HEAD | {"model.temperature": "temperature",
                              "model.ema_momentum": "momentum", "model.queue_size": "queue_size"},
    "byol": _SHARED_HEAD | {"model.ema_momentum": "base_tau"},
    "swav": _SHARED_HEAD | {"model.temperature": "temperature",
                            "model.num_prototypes": "num_prototypes",
                            "model.sinkhorn_epsilon": "sinkhorn_epsilon",
                            "model.sinkhorn_iterations": "sinkhorn_iterations",
                            "model.freeze_prototypes_epochs": "freeze_prototypes_epochs",
                            "model.swav_queue_size": "queue_size",
                            "model.swav_queue_start_epochs": "queue_start_epochs"},
}
LEGACY_KEYS = frozenset(k for keys in MOVED.values() for k in keys)


def new_key(old: str, method: str) -> str | None:
    """Today's name of the 0.1 key ``old`` for ``method`` (None: not a 0.1 key, or one
    ``method`` never used)."""
    inner = MOVED.get(method, {}).get(old)
    return f"model.{method}.{inner}" if inner else None


def pin_old_views(loaded: dict[str, Any]) -> bool:
    """A run's config.yaml written before each method had its own view recipe (every
    ``augment`` key but ``recipe``) trained with SimSiam's recipe whatever its method:
    read it with ``augment.recipe: simsiam`` so that a resumed run keeps its views.
    Returns whether the file was such a config (changed in place)."""
    aug = loaded.get("augment")
    if not isinstance(aug, dict) or "recipe" in aug or not {"backend", "flip_prob"} <= set(aug):
        return False
    aug["recipe"] = "simsiam"
    return True


def migrate(loaded: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Move the 0.1 keys of a loaded config file (plain nested dicts) into the section of
    the file's method, in place. Null values are left to today's defaults (they meant the
    same published value). Keys that method never used are dropped: they had no effect on
    its runs (a later ``--method`` switch does not bring them back).

    Returns:
        (moved, ignored): the 0.1 keys found, in file order (both empty: nothing to do).
    """
    method = loaded.get("method") or "simsiam"
    moved, ignored = [], []
    for section in ("model", "optim"):
        block = loaded.get(section)
        if not isinstance(block, dict):
            continue
        for key in [k for k in block if f"{section}.{k}" in LEGACY_KEYS]:
            value = block.pop(key)
            inner = MOVED.get(method, {}).get(f"{section}.{key}")
            if inner is None:
                ignored.append(f"{section}.{key}")
                continue
            moved.append(f"{section}.{key}")
            if value is not None:
                loaded.setdefault("model", {}).setdefault(method, {})[inner] = value
    return moved, ignored

"""Resolving a run's config, the top of the library below evaluation and training: what
:func:`simsiam.config.load.load_config` does after the schema check. A backbone file named
by ``model.image_init`` sets the backbone (:mod:`simsiam.weights`), a caption folder
becomes its table (:mod:`simsiam.data.captions`), the view recipe fills the null
``augment.*`` values (:mod:`simsiam.augment.recipes`), then every range and registry check
(:mod:`simsiam.config.validate`). This module imports torch (through the registries).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from simsiam.augment.recipes import RECIPES, resolve_views
from simsiam.augment.stats import resolved_normalize
from simsiam.config.schema import Config
from simsiam.config.validate import validate
from simsiam.data.captions import caption_table_in, is_caption_source
from simsiam.errors import CheckpointError, ConfigError, ConfigNotice
from simsiam.methods.settings import CARDS
from simsiam.weights.backbones import backbone_file_info

__all__ = ["resolve_image_init", "resolve_run"]


def resolve_run(cfg: Config, where: str) -> None:
    """Resolve ``cfg`` in place, in order: ``model.image_init`` (:func:`resolve_image_init`),
    a caption folder for a method that learns from captions, the view recipe; then
    :func:`~simsiam.config.validate.validate`.

    Raises:
        ConfigError: naming ``where``, the key, the value and the fix.
    """
    resolve_image_init(cfg, where)
    _caption_table_for(cfg, where)
    _resolve_views(cfg, where)
    validate(cfg, where)


def _resolve_views(cfg: Config, where: str) -> None:
    """Fill the null ``augment.*`` values from the view recipe (``augment.recipe``; auto:
    the method's own, its card's ``view_recipe``;
    :func:`simsiam.augment.recipes.resolve_views`), so a run's config.yaml records every
    value it trained with.

    Raises:
        ConfigError: an unknown ``augment.recipe``.
    """
    if cfg.augment.recipe != "auto" and cfg.augment.recipe not in RECIPES:
        raise ConfigError(f"{where}: augment.recipe = {cfg.augment.recipe!r} is unknown: "
                          f"choose auto (the method's own) or one of {tuple(RECIPES)}")
    own = CARDS[cfg.method].view_recipe if cfg.method in CARDS else None
    if own is None:  # an unknown method: validate() names it
        return
    cfg.augment = resolve_views(cfg.augment, cfg.data.image_size, own)


def _caption_table_for(cfg: Config, where: str) -> None:
    """A method that learns from captions, given a folder holding one caption table
    (``captions.csv``/``.tsv``/``.jsonl``, e.g. ``../shared/data/flickr8k-1k``), reads that
    table (with a :class:`~simsiam.errors.ConfigNotice`).

    Raises:
        ConfigError: any other source that is not a caption table or shards (an image
            folder, ``cifar10``): refused before any image is decoded.
    """
    card = CARDS.get(cfg.method)  # an unknown method is named by validate()
    if card is None or card.batch_kind != "captions" or not cfg.data.source:
        return
    folder = Path(cfg.data.source).expanduser()
    table = caption_table_in(folder) if folder.is_dir() else None
    if table is not None:
        warnings.warn(ConfigNotice(f"{where}: data.source = '{cfg.data.source}' is a folder; "
                                   f"{cfg.method} reads its caption table '{table}'"),
                      stacklevel=4)
        cfg.data.source = str(table)
    elif not is_caption_source(cfg.data.source):
        raise ConfigError(f"{where}: method {cfg.method!r} learns from captions, and "
                          f"data.source = '{cfg.data.source}' has none: pass --data a caption "
                          "table (CSV, TSV or JSONL with an image and a caption column, or a "
                          "folder holding captions.csv) or WebDataset shards "
                          "('shards/{00000..00099}.tar' with {key}.jpg and {key}.txt)")


def resolve_image_init(cfg: Config, where: str) -> None:
    """Fit ``cfg`` to ``model.image_init`` (LiT: the backbone starts from an exported
    ``backbone.safetensors``, a training checkpoint, or a run directory standing for
    one; see :func:`simsiam.weights.backbones.resolve_run_checkpoint`): the path becomes the
    absolute path of the file; the file's arch and stem (its metadata ``arch``/``stem``,
    else read off its keys by :func:`simsiam.weights.backbones.infer_arch`) replace
    ``model.backbone``/``model.stem``; an ``augment.normalize`` of "auto" becomes the
    file's normalisation (its ``normalize``, "auto" resolved at the file's
    ``image_size``, see :func:`resolved_normalize`). A :class:`~simsiam.errors.ConfigNotice`
    names every value that changed. Nothing happens without ``model.image_init``.

    Raises:
        ConfigError: the path does not exist, or the file cannot be read as a backbone
            (naming model.image_init and the path).
    """
    m = cfg.model
    if m.image_init is None:
        return
    given = Path(m.image_init).expanduser()
    if not given.exists():
        raise ConfigError(f"{where}: model.image_init = '{m.image_init}' does not exist "
                          f"('{given.resolve()}'): give an exported backbone.safetensors, a "
                          "checkpoint or a run directory")
    try:
        path, info = backbone_file_info(given)
    except CheckpointError as exc:
        raise ConfigError(f"{where}: model.image_init = '{m.image_init}' cannot be read as a "
                          f"backbone: {exc}") from exc
    m.image_init = str(path.resolve())
    changed = []
    if (m.backbone, m.stem) != (info["arch"], info["stem"]):
        changed.append(f"model.backbone/model.stem {m.backbone}/{m.stem} -> "
                       f"{info['arch']}/{info['stem']}")
        m.backbone, m.stem = info["arch"], info["stem"]
    if cfg.augment.normalize == "auto":
        normalize = resolved_normalize(info["normalize"], info["image_size"])
        if normalize != resolved_normalize("auto", cfg.data.image_size):
            changed.append(f"augment.normalize auto -> {normalize} (the file was trained on "
                           f"{info['image_size']} px views)")
        cfg.augment.normalize = normalize
    if changed:
        warnings.warn(ConfigNotice(
            f"{where}: model.image_init = '{m.image_init}' holds a {info['arch']} "
            f"({info['stem']} stem) backbone, so the run uses the file's settings: "
            + "; ".join(changed)), stacklevel=4)

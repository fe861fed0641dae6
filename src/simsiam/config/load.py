"""Reading a run's config: YAML preset, the method's published settings, command-line
overrides, then the checks of :mod:`simsiam.config.validate`; and writing it back.

Order of precedence (later wins): the schema's defaults (:mod:`simsiam.config.schema`),
the YAML file, the settings a method's authors used (``Method.published``, only when the
overrides switch the file's method to another), the overrides (``--set`` and flags).
Last, ``model.image_init`` (a backbone file the run starts from) sets the backbone, stem
and an "auto" normalisation to the file's (:func:`resolve_image_init`).
"""

from __future__ import annotations

import difflib
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from simsiam.augment.recipes import RECIPE_KEYS, recipe_values
from simsiam.augment.stats import resolved_normalize
from simsiam.config import legacy
from simsiam.config.schema import Config
from simsiam.errors import ConfigError, ConfigNotice, DataError
from simsiam.fileio import read_utf8_text
from simsiam.methods.settings import CARDS

__all__ = ["PRESET_DIR", "VALUE_HINTS", "auto_warmup_epochs", "config_differences",
           "config_keys", "config_to_dict", "config_to_yaml", "fit_warmup", "load_config",
           "nearest_keys", "preset_names", "read_config", "resolve_config_path",
           "resolved_normalize"]

PRESET_DIR = Path(__file__).resolve().parent.parent / "configs"


def preset_names() -> list[str]:
    """Names of the presets shipped with the package (``configs/*.yaml``)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def resolve_config_path(path: str | Path) -> Path:
    """A YAML path as given, or the shipped preset of that name (``cifar10``, ``demo-cpu``).

    Raises:
        ConfigError: neither a file nor a preset name.
    """
    p = Path(path)
    if p.is_file():
        return p
    preset = PRESET_DIR / f"{p.stem}.yaml"
    if p.parent == Path(".") and preset.is_file():
        return preset
    raise ConfigError(f"config file '{p}' does not exist; pass a YAML file or one of the "
                      f"presets {preset_names()}")


# keys whose type alone does not say what to give
VALUE_HINTS = {"augment.compile": "true, false or null (null, the default: compiled kernels "
                                  "on a CPU for views of 128 px and more)"}


def config_keys() -> list[str]:
    """Every key of :class:`Config` in dotted form (``optim.base_lr``, ``model.swav.dim``),
    the sections themselves included (``optim``)."""
    flat = _flat(OmegaConf.to_container(OmegaConf.structured(Config)))  # type: ignore[arg-type]
    return sorted({k.rsplit(".", n)[0] for k in flat for n in range(k.count(".") + 1)})


def nearest_keys(key: str, keys: list[str] | None = None) -> list[str]:
    """Up to three keys of ``keys`` (default: :func:`config_keys`) spelt nearest ``key``:
    a key of the same section (``optim.base_rate`` -> ``optim.base_lr``), else one of that
    name in another section (``epoch`` -> ``train.epochs``), else by the whole dotted name
    (``optim.lr`` -> ``optim.base_lr``); never a section that holds ``key``."""
    keys = config_keys() if keys is None else keys
    section, _, leaf = key.rpartition(".")
    keys = [k for k in keys if not key.startswith(f"{k}.")]
    siblings = {k.rpartition(".")[2]: k for k in keys if k.rpartition(".")[0] == section}
    near = difflib.get_close_matches(leaf, list(siblings), n=2, cutoff=0.6)
    if near:
        return [siblings[n] for n in near]
    leaves: dict[str, list[str]] = {}
    for k in keys:
        leaves.setdefault(k.rpartition(".")[2], []).append(k)
    near = difflib.get_close_matches(leaf, list(leaves), n=2, cutoff=0.8)
    found = [k for n in near for k in leaves[n]][:3]
    return found or difflib.get_close_matches(key, keys, n=2, cutoff=0.75)


# where a user finds every key: commands and files a pip install has (never a source path)
KEYS_HELP = ("`simsiam describe` prints a method's settings, and every key with its "
             "default is in the shipped presets (`simsiam pretrain --config NAME`, "
             f"NAME one of {preset_names()})")


def _wrap(exc: OmegaConfBaseException, where: str, method: str = "simsiam") -> ConfigError:
    key = getattr(exc, "full_key", None) or "?"
    msg = str(exc).splitlines()[0]
    if isinstance(exc, (ConfigKeyError, ConfigAttributeError)):
        moved = legacy.new_key(key, method) if key in legacy.LEGACY_KEYS else None
        if moved:
            return ConfigError(f"{where}: config key '{key}' is now '{moved}' (each method "
                               f"has its own section model.{method}.*): use that name")
        if key in legacy.LEGACY_KEYS:
            return ConfigError(f"{where}: config key '{key}' is not a setting of method "
                               f"{method!r} (its settings are model.{method}.*)")
        said = msg.split(" Did you mean")[0].rstrip(".")
        near = nearest_keys(key)
        guess = f" Did you mean {' or '.join(repr(k) for k in near)}?" if near else ""
        return ConfigError(f"{where}: unknown config key '{key}': {said}.{guess} Check the "
                           f"spelling: {KEYS_HELP}")
    hint = VALUE_HINTS.get(key, "a value of the key's type (the shipped presets show each "
                           "key's default: `simsiam pretrain --config NAME`)")
    return ConfigError(f"{where}: bad value for '{key}': {msg}. Give {hint}")


def _read_file(path: str | Path) -> tuple[DictConfig, str]:
    """The YAML file as a DictConfig (0.1 keys migrated), and its name for messages."""
    p = resolve_config_path(path)
    try:
        read_utf8_text(p, "config file")  # not UTF-8: named with the line and the fix
    except DataError as exc:
        raise ConfigError(str(exc)) from None
    try:
        loaded = OmegaConf.load(p)
    except Exception as exc:  # yaml.YAMLError and friends
        raise ConfigError(f"config file '{p}' is not valid YAML: {exc}") from exc
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"config file '{p}' must hold a mapping of sections, "
                          f"not a {type(loaded).__name__}")
    plain = OmegaConf.to_container(loaded)
    before_recipes = legacy.pin_old_views(plain)  # type: ignore[arg-type]
    moved, ignored = legacy.migrate(plain)  # type: ignore[arg-type]
    if before_recipes and not (moved or ignored):
        loaded = OmegaConf.create(plain)
    if moved or ignored:
        method = plain.get("method") or "simsiam"  # type: ignore[union-attr]
        said = [f"read {', '.join(moved)} as model.{method}.*"] if moved else []
        said += [f"ignored {', '.join(ignored)} (not settings of {method}; give them as "
                 "model.<method>.* to use them)"] if ignored else []
        warnings.warn(ConfigNotice(
            f"{path}: a simsiam 0.1 config (each method has its own section now): "
            + "; ".join(said)), stacklevel=4)
        loaded = OmegaConf.create(plain)
    return loaded, str(path)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read a YAML preset, apply dotted-key overrides, validate, and return a Config.

    When the overrides switch the file's method to another (``--method mocov2`` on a
    SimSiam preset), the settings that method's authors used outside its own section
    (``Method.published``, e.g. SwAV's multi-crop, and unless the file sets
    ``optim.method_optimizer: false``, ``Method.published_optim``: LARS for SimCLR, BYOL
    and SwAV, MoCo v2's base lr 0.03) are merged over the file, then the overrides. A file
    that names its method itself (a run's
    ``config.yaml``) is read as it is.

    The warm-up (``optim.warmup_epochs``; null: the paper's rule) must end before the run:
    one that comes from the file or the rule and does not fit ``train.epochs`` (say
    ``--epochs 1`` on a preset with a 1-epoch warm-up) is shortened to half the run with a
    :class:`~simsiam.errors.ConfigNotice` naming the value used; one given in
    ``overrides`` that does not fit is refused.

    Args:
        path: a YAML file whose keys are a subset of :class:`Config`, or the name of a
            shipped preset (see :func:`resolve_config_path`); None for defaults.
        overrides: ``{"train.epochs": 5, ...}`` applied after the file (CLI flags).

    Raises:
        ConfigError: the file is missing, a key is unknown, a value has the wrong type,
            or :func:`~simsiam.config.validate.validate` rejects a value. The message names
            the file and key.
    """
    cfg, where = read_config(path, overrides)
    # The run's resolution needs the registries (torch, the backbones, the data sources):
    # imported here, after the schema check, so that a bad key or type is answered at once.
    from simsiam.config.resolve import resolve_run

    resolve_run(cfg, where)
    return cfg


def read_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                ) -> tuple[Config, str]:
    """The first half of :func:`load_config`, torch-free: the YAML file, a switched
    method's published settings and the overrides merged over the schema's defaults (an
    unknown key or a value of the wrong type refused, naming the file or override, the key
    and the nearest keys), the warm-up fitted to the run; nothing resolved or range-checked
    yet. Returns the config and the name of its source for messages ("defaults", the file).

    Raises:
        ConfigError: the file is missing or not YAML, a key is unknown, a value has the
            wrong type.
    """
    overrides = overrides or {}
    schema = OmegaConf.structured(Config)
    where = "defaults"
    if path is not None:
        loaded, where = _read_file(path)
        try:
            schema = OmegaConf.merge(schema, loaded)
        except OmegaConfBaseException as exc:
            raise _wrap(exc, where, str(loaded.get("method") or "simsiam")) from exc
    method = overrides.get("method")
    warmup_from = "from the file"
    if method in CARDS and method != schema.get("method"):
        card = CARDS[method]
        _release_recipe(schema)
        published = dict(card.published)
        own_optim = card.published_optim(int(overrides.get("data.image_size",
                                                          schema.data.image_size)))
        if overrides.get("optim.method_optimizer", schema.optim.method_optimizer):
            published |= own_optim
        elif own_optim:
            said = ", ".join(f"{k.split('.')[-1]} {v}" for k, v in own_optim.items())
            warnings.warn(ConfigNotice(
                f"{where}: {method}'s published optimizer settings ({said}) are not applied: "
                "this file holds its optimizer for every method (optim.method_optimizer: "
                "false, a short CPU preset); --set optim.method_optimizer=true applies them"),
                stacklevel=3)
        for key, value in published.items():
            OmegaConf.update(schema, key, value, merge=True, force_add=False)
        if "optim.warmup_epochs" in published:
            warmup_from = f"{method}'s published warm-up"
    effective = str(method or schema.get("method"))
    for key, value in overrides.items():
        try:
            OmegaConf.update(schema, key, value, merge=True, force_add=False)
        except OmegaConfBaseException as exc:
            raise _wrap(exc, f"override {key}={value!r}", effective) from exc
    cfg: Config = OmegaConf.to_object(schema)  # type: ignore[assignment]
    fit_warmup(cfg, where, explicit="optim.warmup_epochs" in overrides, source=warmup_from)
    return cfg, where


def _release_recipe(schema: DictConfig) -> None:
    """Before a ``--method`` switch: the file's view values that are its own method's
    recipe (a run's config.yaml records them all, with ``augment.recipe`` naming it) go
    back to null, so the new method's recipe fills them; values the file sets apart from
    that recipe, and a recipe the file chose for another method, stay."""
    aug, old = schema.augment, str(schema.get("method"))
    card = CARDS.get(old)
    if card is None or aug.recipe not in ("auto", card.view_recipe):
        return
    own = recipe_values(card.view_recipe, int(schema.data.image_size))
    for key in RECIPE_KEYS:
        value = getattr(own, key)
        given = aug.get(key)
        if given is not None and (list(given) if key == "crop_scale" else given) == \
                (list(value) if key == "crop_scale" else value):
            aug[key] = None
    aug.recipe = "auto"


def auto_warmup_epochs(batch_size: int) -> int:
    """The paper's warmup rule (Table 2): 10 epochs for batches of 1024 or more, else 0."""
    return 10 if batch_size >= 1024 else 0


def fit_warmup(cfg: Config, where: str, explicit: bool, source: str = "from the file") -> None:
    """Resolve a null ``optim.warmup_epochs`` by :func:`auto_warmup_epochs`; shorten a
    warm-up that is not ``explicit`` and leaves no epoch of the run after it to half the run,
    with a :class:`~simsiam.errors.ConfigNotice` (see :func:`load_config`) that names
    ``source``, where the warm-up came from (the file, or a method's published settings)."""
    o, epochs = cfg.optim, cfg.train.epochs
    if o.warmup_epochs is None:
        o.warmup_epochs = float(auto_warmup_epochs(cfg.train.batch_size))
        source = "the paper's rule for batches of 1024 or more"
    if explicit or epochs <= 0 or o.warmup_epochs < epochs:
        return
    fitted = epochs / 2
    warnings.warn(ConfigNotice(
        f"{where}: optim.warmup_epochs = {o.warmup_epochs:g} ({source}) does not fit "
        f"train.epochs = {epochs}: the warm-up is shortened to {fitted:g} epochs (half the "
        "run); to choose another, give --set optim.warmup_epochs=N"), stacklevel=4)
    o.warmup_epochs = fitted


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": {"c": 8}}}`` -> ``{"a.b.c": 8}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(a: Config, b: Config) -> list[str]:
    """Every key whose value differs between ``a`` and ``b``, as ``"key: run has X, given
    Y"``, leaving out the sections of methods that neither runs (they change nothing)."""
    x, y = _flat(config_to_dict(a)), _flat(config_to_dict(b))
    unused = tuple(f"model.{m}." for m in CARDS if m not in (a.method, b.method))
    return [f"{k}: run has {x.get(k)!r}, given {y.get(k)!r}" for k in dict.fromkeys([*x, *y])
            if x.get(k) != y.get(k) and not k.startswith(unused)]


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The resolved config as plain nested dicts (for JSON and checkpoints)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg))  # type: ignore[return-value]


def config_to_yaml(cfg: Config) -> str:
    """The resolved config as YAML (what a run directory's config.yaml holds: every key,
    so that it loads back to an equal :class:`Config`)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))

"""Read a backbone from any checkpoint layout, never silently: for evaluation and for a run
that starts from ``model.image_init`` (:func:`initial_backbone`).

Accepted (SIMSIAM.md section 8: DDP checkpoints carry ``module.``):

- a simsiam training checkpoint (``RUN/checkpoints/last.pt``: ``model`` with ``backbone.*``);
- a simsiam exported backbone (``backbone.safetensors``, torchvision key names);
- a plain torchvision ResNet state dict (``conv1.weight`` ..., ``fc.*`` ignored), as a
  ``.pt``/``.pth`` file or safetensors, with or without a ``module.`` prefix;
- an official SimSiam checkpoint (``state_dict`` with ``module.encoder.*``; the encoder's
  ``fc.*`` is the projector and ``module.predictor.*`` the predictor, both left out);
- a timm backbone (``model.backbone: timm/<name>``): an exported ``backbone.safetensors``
  whose metadata ``arch`` is ``timm/<name>`` (timm's key names), or a simsiam training
  checkpoint whose ``config`` names it (the ``backbone.*`` keys of its ``model``; the
  method's heads, momentum copies and queues are left out).

The architecture (ResNet-18/34/50) and stem (7x7 or 3x3 first conv) of a ResNet are read
off the weights; a timm model's name off the file's metadata or config. After loading, the
backbone must have no missing key (the classifier ``fc`` is not part of it) and nothing
may be left over except the heads named above; otherwise :class:`CheckpointError` names
the keys. Files are read safely (``torch.load`` with ``weights_only=True``) or with
safetensors, so loading never runs code.

The same reading starts a run's backbone from ``model.image_init`` (LiT):
:func:`backbone_file_info` tells the config loader the file's arch, stem and
normalisation, :func:`load_image_init` loads its weights into the new backbone.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from simsiam.augment.stats import resolved_normalize
from simsiam.errors import CheckpointError, ConfigError
from simsiam.methods.base import Method
from simsiam.methods.registry import METHODS, build_method
from simsiam.models.backbones import BACKBONES, STEMS, build_backbone, is_timm
from simsiam.weights.files import load_backbone_file, load_checkpoint

if TYPE_CHECKING:
    from simsiam.config.schema import ModelConfig

# Prefixes under which a backbone's torchvision keys are found, most specific first.
_PREFIXES = ("module.encoder.", "module.backbone.", "encoder.", "backbone.", "module.",
             "_orig_mod.", "")
# Keys under the chosen prefix that belong to heads, not to the backbone.
_HEAD_KEYS = ("fc.",)
# Prefixes that wrappers (DistributedDataParallel, torch.compile) put before every key.
_WRAPPERS = ("module.", "_orig_mod.")


def _state_of(obj: dict[str, Any]) -> dict[str, torch.Tensor]:
    for key in ("model", "state_dict"):
        if isinstance(obj.get(key), dict):
            return obj[key]
    return obj


def infer_arch(state: dict[str, torch.Tensor]) -> tuple[str, str]:
    """(arch, stem) of a torchvision-keyed ResNet state dict.

    Raises:
        CheckpointError: the keys are not those of a ResNet-18/34/50.
    """
    if "conv1.weight" not in state or "layer4.0.conv1.weight" not in state:
        raise CheckpointError(f"not a ResNet state dict (first keys: {sorted(state)[:8]})")
    stem = "cifar" if state["conv1.weight"].shape[-1] == 3 else "imagenet"
    if "layer1.0.conv3.weight" in state:
        return "resnet50", stem
    return ("resnet34" if "layer3.5.conv1.weight" in state else "resnet18"), stem


def _method_parts(method: str | None = None) -> set[str]:
    """Key prefixes of the parts a method keeps beside its backbone in a training
    checkpoint (``Method.outside_backbone``: BYOL's target network, MoCo's key encoder,
    head and queue, SwAV's prototypes and queue, CLIP's text tower): known, left out. Those
    of ``method`` (the checkpoint's own, from its config), else of every method."""
    if method in METHODS:
        return set(METHODS[method].outside_backbone)
    return {p for cls in METHODS.values() for p in cls.outside_backbone}


def extract_backbone_state(obj: dict[str, Any], where: str = "checkpoint"
                           ) -> dict[str, torch.Tensor]:
    """The backbone's torchvision-keyed tensors out of any accepted layout.

    Raises:
        CheckpointError: no ResNet under any known prefix, or keys that belong to neither
            the backbone nor a known head (named in the message).
    """
    state = _state_of(obj)
    for prefix in _PREFIXES:
        if f"{prefix}conv1.weight" in state:
            break
    else:
        raise CheckpointError(f"{where}: no ResNet backbone found (looked for conv1.weight under "
                              f"{[p for p in _PREFIXES if p]} or no prefix); its keys start "
                              f"{sorted(state)[:8]}")
    inner = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    outside = sorted(k for k in state if not k.startswith(prefix))
    known_outside = {"module.predictor.", "predictor.", "projector.", "module.projector."}
    config = obj.get("config") if isinstance(obj, dict) else None
    method = config.get("method") if isinstance(config, dict) else None
    known_outside |= {f"{wrap}{p}" for p in _method_parts(method) for wrap in ("", "module.")}
    unrelated = [k for k in outside if not any(k.startswith(h) for h in known_outside)]
    if unrelated:
        raise CheckpointError(f"{where}: keys that belong to no backbone or head: "
                              f"{unrelated[:10]}{' ...' if len(unrelated) > 10 else ''}")
    return {k: v for k, v in inner.items() if not k.startswith(_HEAD_KEYS)}


def resolve_run_checkpoint(path: Path) -> Path:
    """A run directory stands for its ``backbone.safetensors`` (a finished run), else its
    ``checkpoints/last.pt``; any other path is returned as it is.

    Raises:
        CheckpointError: a directory that holds neither (names both).
    """
    if not path.is_dir():
        return path
    for candidate in (path / "backbone.safetensors", path / "checkpoints" / "last.pt"):
        if candidate.is_file():
            return candidate
    raise CheckpointError(f"'{path}' is a directory without backbone.safetensors or "
                          "checkpoints/last.pt: pass a run directory, or a checkpoint file "
                          "(RUN/backbone.safetensors, RUN/backbone_init.safetensors, ...)")


def _unwrapped(key: str) -> str:
    """``key`` without the wrapper prefixes of :data:`_WRAPPERS` (any number, any order)."""
    while key.startswith(_WRAPPERS):
        key = key[len(next(w for w in _WRAPPERS if key.startswith(w))):]
    return key


def timm_backbone_state(obj: dict[str, Any], where: str = "checkpoint"
                        ) -> dict[str, torch.Tensor]:
    """A timm backbone's tensors (timm's key names) out of an exported backbone (its keys
    as they are) or a training checkpoint (the ``backbone.*`` keys of its ``model``; the
    method's other modules are left out), wrapper prefixes removed.

    Raises:
        CheckpointError: a training checkpoint without ``backbone.*`` keys.
    """
    if isinstance(obj.get("model"), dict):
        model = {_unwrapped(k): v for k, v in obj["model"].items()}
        state = {k[len("backbone."):]: v for k, v in model.items()
                 if k.startswith("backbone.")}
        if not state:
            raise CheckpointError(f"{where}: its model has no backbone.* keys (they start "
                                  f"{sorted(model)[:8]})")
        return state
    return {_unwrapped(k): v for k, v in obj.items()}


def _file_settings(arch: str, stem: str, meta: dict[str, Any]) -> dict[str, Any]:
    """arch, stem, image_size, normalize and seed: those of ``meta`` when present, else
    from the stem (3x3 stem: 32 px, CIFAR-10 statistics; 7x7: 224 px, ImageNet), seed 0;
    ``normalize`` is always a resolved name (cifar10 or imagenet: ``auto`` resolved at the
    file's image size, the statistics the run used);
    ``data``: the run's data section when the file carries its config (else None), so the
    evaluation commands can rebuild the run's held-out split."""
    small = stem == "cifar"
    size = int(meta.get("image_size", 32 if small else 224))
    # "auto" (a run's config, or an export written before the statistics were resolved)
    # means the statistics the run trained with: those of its own view size, kept when an
    # evaluation command changes only the input size
    normalize = resolved_normalize(meta.get("normalize", "cifar10" if small else "imagenet"),
                                   size)
    return {"arch": arch, "stem": stem, "image_size": size, "normalize": normalize,
            "seed": int(meta.get("seed", 0)), "data": meta.get("data")}


def _run_data(config: Any) -> dict[str, Any] | None:
    """The ``data`` section of a run's config (a dict, or the YAML text an export holds)."""
    if isinstance(config, str):
        import yaml

        try:
            config = yaml.safe_load(config)
        except yaml.YAMLError:
            return None
    data = config.get("data") if isinstance(config, dict) else None
    return data if isinstance(data, dict) else None


def read_backbone_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The backbone's tensors in any accepted layout (see the module docstring) and its
    settings (``arch``, ``stem``, ``image_size``, ``normalize``, ``seed``), read without
    building a model. ``path`` may be a run directory (:func:`resolve_run_checkpoint`).

    Raises:
        CheckpointError: unreadable file, unknown layout, or keys that belong to nothing.
    """
    path = resolve_run_checkpoint(Path(path))
    meta: dict[str, Any] = {}
    arch = ""
    if path.suffix == ".safetensors":
        raw, file_meta = load_backbone_file(path)
        meta = {k: file_meta[k] for k in ("image_size", "normalize", "seed") if k in file_meta}
        meta["data"] = _run_data(file_meta.get("config"))
        arch = file_meta.get("arch", "")
        obj: dict[str, Any] = raw
    else:
        obj = load_checkpoint(path)
        cfg = obj.get("config")
        if isinstance(cfg, dict) and "model" in obj:
            meta = {"image_size": cfg["data"]["image_size"],
                    "normalize": cfg["augment"]["normalize"], "seed": cfg["train"]["seed"],
                    "data": _run_data(cfg)}
            arch = str((cfg.get("model") or {}).get("backbone", ""))
    if is_timm(arch):
        return timm_backbone_state(obj, f"'{path}'"), _file_settings(arch, "imagenet", meta)
    state = extract_backbone_state(obj, f"'{path}'")
    arch, stem = infer_arch(state)
    return state, _file_settings(arch, stem, meta)


def backbone_file_info(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """The file a path stands for (:func:`resolve_run_checkpoint`) and its settings as
    :func:`read_backbone_weights` gives them; an exported ``backbone.safetensors`` with
    ``arch`` and ``stem`` metadata is answered from its metadata alone (no tensor read).

    Raises:
        CheckpointError: as :func:`read_backbone_weights`.
    """
    path = resolve_run_checkpoint(Path(path))
    if path.suffix == ".safetensors" and path.is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
        except Exception as exc:
            raise CheckpointError(f"cannot read safetensors file '{path}': {exc}") from exc
        arch, stem = meta.get("arch", ""), meta.get("stem", "")
        if (is_timm(arch) or arch in BACKBONES) and stem in STEMS:
            return path, _file_settings(arch, "imagenet" if is_timm(arch) else stem, meta)
    return path, read_backbone_weights(path)[1]


def load_image_init(backbone: nn.Module, path: str | Path) -> None:
    """Load ``model.image_init`` (an exported backbone or a run directory, any layout of
    :func:`read_backbone_weights`) into ``backbone``, strictly: every key of the backbone
    from the file, nothing left over.

    Raises:
        ConfigError: the file cannot be read, or its keys or shapes do not fit
            ``backbone`` (naming model.image_init, the file and the keys).
    """
    try:
        state, info = read_backbone_weights(path)
    except CheckpointError as exc:
        raise ConfigError(f"model.image_init = '{path}' cannot be loaded: {exc}") from exc
    fix = (f"the file holds a {info['arch']} ({info['stem']} stem): set model.backbone and "
           "model.stem to those (simsiam.config.load_config does it)")
    try:
        missing, unexpected = backbone.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a shape that differs
        raise ConfigError(f"model.image_init = '{path}' does not fit the backbone: "
                          f"{str(exc).strip()}; {fix}") from exc
    if missing or unexpected:
        raise ConfigError(f"model.image_init = '{path}' does not fit the backbone: missing keys "
                          f"{missing[:10]}, unexpected keys {unexpected[:10]}; {fix}")


def load_backbone_for_eval(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """A backbone in eval mode and its settings: arch, stem, image_size, normalize, seed.

    ``path`` may be a run directory (see :func:`resolve_run_checkpoint`).
    ``image_size`` and ``normalize`` come from the file's simsiam metadata or config when
    present, else from the stem (3x3 stem: 32 px, CIFAR-10 statistics; 7x7: 224 px,
    ImageNet); ``seed`` likewise, else 0. A timm backbone (``arch`` ``timm/<name>``) is
    built with ``timm.create_model(name, pretrained=False, num_classes=0)``.

    Raises:
        CheckpointError: unreadable file, unknown layout, a timm model this timm lacks, or
            keys (or, for timm, shapes) that do not match.
    """
    path = resolve_run_checkpoint(Path(path))
    state, info = read_backbone_weights(path)
    arch, stem = info["arch"], info["stem"]
    if is_timm(arch):
        try:
            backbone = build_backbone(arch, stem)
            missing, unexpected = backbone.load_state_dict(state, strict=False)
        except (ConfigError, RuntimeError) as exc:
            raise CheckpointError(f"'{path}' does not load into a {arch} backbone: "
                                  f"{str(exc).strip()}") from exc
        what = f"a {arch} backbone"
    else:
        backbone = build_backbone(arch, stem)
        missing, unexpected = backbone.load_state_dict(state, strict=False)
        what = f"a {arch} ({stem} stem) backbone"
    if missing or unexpected:
        raise CheckpointError(f"'{path}' does not fit {what}: missing "
                              f"keys {missing[:10]}, unexpected keys {unexpected[:10]}")
    return backbone.eval(), info


def initial_backbone(model: ModelConfig) -> nn.Module:
    """The backbone a run starts from: ``model.backbone`` with ``model.stem`` and
    ``model.zero_init_residual``, and with ``model.image_init`` the weights of that file
    loaded (:func:`load_image_init`). Pass it to :func:`simsiam.methods.build_method`.

    Raises:
        ConfigError: unknown backbone or stem; an ``image_init`` file that cannot be read or
            does not fit the backbone (naming the file and the keys).
    """
    backbone = build_backbone(model.backbone, model.stem, model.zero_init_residual)
    if model.image_init is not None:
        load_image_init(backbone, model.image_init)
    return backbone


def build_initial_method(method: str, model: ModelConfig, image_size: int = 224,
                         steps_per_epoch: int = 0) -> Method:
    """The method as a run starts it: :func:`simsiam.methods.build_method` on
    :func:`initial_backbone` (``model.image_init`` loaded before the method copies the
    backbone into its momentum encoders). Arguments as :func:`~simsiam.methods.build_method`.

    Raises:
        ConfigError: as :func:`initial_backbone` and :func:`~simsiam.methods.build_method`.
    """
    return build_method(method, model, image_size, steps_per_epoch, initial_backbone(model))

"""Load a backbone for evaluation from any checkpoint layout, never silently.

Accepted (SIMSIAM.md section 8: DDP checkpoints carry ``module.``):

- a simsiam training checkpoint (``RUN/checkpoints/last.pt``: ``model`` with ``backbone.*``);
- a simsiam exported backbone (``backbone.safetensors``, torchvision key names);
- a plain torchvision ResNet state dict (``conv1.weight`` ..., ``fc.*`` ignored), as a
  ``.pt``/``.pth`` file or safetensors, with or without a ``module.`` prefix;
- an official SimSiam checkpoint (``state_dict`` with ``module.encoder.*``; the encoder's
  ``fc.*`` is the projector and ``module.predictor.*`` the predictor, both left out).

The architecture (ResNet-18/34/50) and stem (7x7 or 3x3 first conv) are read off the
weights. After loading, the backbone must have no missing key (the classifier ``fc`` is
not part of it) and nothing may be left over except the heads named above; otherwise
:class:`CheckpointError` names the keys. Files are read safely (``torch.load`` with
``weights_only=True``) or with safetensors, so loading never runs code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from simsiam.errors import CheckpointError
from simsiam.models.backbones import build_backbone
from simsiam.train.checkpoint import load_backbone_file, load_checkpoint

# Prefixes under which a backbone's torchvision keys are found, most specific first.
_PREFIXES = ("module.encoder.", "module.backbone.", "encoder.", "backbone.", "module.",
             "_orig_mod.", "")
# Keys under the chosen prefix that belong to heads, not to the backbone.
_HEAD_KEYS = ("fc.",)


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


def load_backbone_for_eval(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """A backbone in eval mode and its settings: arch, stem, image_size, normalize, seed.

    ``path`` may be a run directory (see :func:`resolve_run_checkpoint`).
    ``image_size`` and ``normalize`` come from the file's simsiam metadata or config when
    present, else from the stem (3x3 stem: 32 px, CIFAR-10 statistics; 7x7: 224 px,
    ImageNet); ``seed`` likewise, else 0.

    Raises:
        CheckpointError: unreadable file, unknown layout, or keys that do not match.
    """
    path = resolve_run_checkpoint(Path(path))
    meta: dict[str, Any] = {}
    if path.suffix == ".safetensors":
        raw, file_meta = load_backbone_file(path)
        meta = {k: file_meta[k] for k in ("image_size", "normalize", "seed") if k in file_meta}
        obj: dict[str, Any] = raw
    else:
        obj = load_checkpoint(path)
        cfg = obj.get("config")
        if isinstance(cfg, dict) and "model" in obj:
            meta = {"image_size": cfg["data"]["image_size"],
                    "normalize": cfg["augment"]["normalize"], "seed": cfg["train"]["seed"]}
    state = extract_backbone_state(obj, f"'{path}'")
    arch, stem = infer_arch(state)
    backbone = build_backbone(arch, stem)
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"'{path}' does not fit a {arch} ({stem} stem) backbone: missing "
                              f"keys {missing[:10]}, unexpected keys {unexpected[:10]}")
    small = stem == "cifar"
    info = {"arch": arch, "stem": stem,
            "image_size": int(meta.get("image_size", 32 if small else 224)),
            "normalize": meta.get("normalize", "cifar10" if small else "imagenet"),
            "seed": int(meta.get("seed", 0))}
    return backbone.eval(), info

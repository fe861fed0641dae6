"""Load a backbone for evaluation from a run checkpoint or an exported backbone.

Loading never silently drops weights: the state dict must match the backbone exactly
(no missing, no unexpected keys), otherwise :class:`CheckpointError` names the keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from simsiam.errors import CheckpointError
from simsiam.models.backbones import build_backbone
from simsiam.train.checkpoint import load_backbone_file, load_checkpoint


def load_backbone_for_eval(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """A backbone in eval mode and its settings (arch, stem, image_size, normalize, seed).

    Args:
        path: ``RUN/checkpoints/last.pt`` (a training checkpoint) or a ``.safetensors``
            backbone exported by a run.

    Raises:
        CheckpointError: unreadable file, unknown layout, or keys that do not match.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        state, meta = load_backbone_file(path)
        if "arch" not in meta:
            raise CheckpointError(f"'{path}' has no 'arch' metadata; it was not exported by "
                                  "simsiam")
        info = {"arch": meta["arch"], "stem": meta.get("stem", "imagenet"),
                "image_size": int(meta.get("image_size", 224)),
                "normalize": meta.get("normalize", "auto"), "seed": int(meta.get("seed", 0))}
    else:
        ckpt = load_checkpoint(path)
        if "model" not in ckpt or "config" not in ckpt:
            raise CheckpointError(f"'{path}' is not a simsiam training checkpoint (keys: "
                                  f"{sorted(ckpt)[:8]})")
        cfg = ckpt["config"]
        info = {"arch": cfg["model"]["backbone"], "stem": cfg["model"]["stem"],
                "image_size": int(cfg["data"]["image_size"]),
                "normalize": cfg["augment"]["normalize"], "seed": int(cfg["train"]["seed"])}
        state = {k[len("backbone."):]: v for k, v in ckpt["model"].items()
                 if k.startswith("backbone.")}
    backbone = build_backbone(info["arch"], info["stem"])
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"'{path}' does not fit a {info['arch']} ({info['stem']} stem) "
                              f"backbone: missing keys {missing[:10]}, unexpected keys "
                              f"{unexpected[:10]}")
    return backbone.eval(), info

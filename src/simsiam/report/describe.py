"""What ``simsiam describe`` prints: the parameter counts per part of a method's model and
the input pipeline a config resolves to."""

from __future__ import annotations

from pathlib import Path

from simsiam.config import Config
from simsiam.data.dataset import resolve_pipeline
from simsiam.data.folder import scan_image_folder, split_roots
from simsiam.methods import build_method
from simsiam.models.backbones import count_parameters

__all__ = ["describe_lines", "pipeline_words"]


def describe_lines(cfg: Config) -> list[str]:
    """``METHOD: BACKBONE (STEM stem), embedding d=D; settings model.METHOD.*``, one line
    per part of the model with trainable (and frozen) parameters, the trainable total and
    the ``input:`` line (:func:`pipeline_words`). Builds the model (no weights read)."""
    model = build_method(cfg.method, cfg.model, cfg.data.image_size)
    parts = {name: m for name, m in model.named_children() if count_parameters(m, False)}
    lines = [f"{cfg.method}: {cfg.model.backbone} ({cfg.model.stem} stem), embedding "
             f"d={model.dim}; settings model.{cfg.method}.*"]
    for name, module in parts.items():
        frozen = count_parameters(module, False) - count_parameters(module)
        extra = f"  (+{frozen:,} frozen)" if frozen else ""
        lines.append(f"  {name:<10} {count_parameters(module):>13,}{extra}")
    lines.append(f"  {'trainable':<10} {count_parameters(model):>13,}")
    lines.append(f"input: {pipeline_words(cfg)}")
    return lines


def pipeline_words(cfg: Config) -> str:
    """``describe``'s input line: ``data.pipeline`` and, for a folder, what it resolves to."""
    d, choice = cfg.data, cfg.data.pipeline
    if cfg.augment.backend != "batched":
        return f"data.pipeline {choice}: cache (augment.backend {cfg.augment.backend})"
    if choice == "auto" and d.source and Path(d.source).expanduser().is_dir():
        paths = scan_image_folder(split_roots(Path(d.source).expanduser())[0])[0]
        choice = f"auto -> {resolve_pipeline('auto', paths, d)} for '{d.source}'"
    return (f"data.pipeline {choice} (cache: decoded once to squares; stream: whole images "
            "decoded every epoch in the workers; dali: as stream, decoded on the GPU by "
            "NVIDIA DALI, else stream; auto: cache when every image is one square no larger "
            "than the cache side, else stream)")

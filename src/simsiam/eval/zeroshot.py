"""Zero-shot classification with a CLIP model: class names in prompts, no labels used.

Source: Radford et al. 2021, section 3.1.4 (prompt engineering and ensembling: each class's
text embedding is the mean of the l2-normalised embeddings of its name in every template,
re-normalised; an image is assigned the class whose embedding is most similar). The
classifier builder and the CLIP paper's 80 ImageNet templates are open_clip's
(``build_zero_shot_classifier``, ``OPENAI_IMAGENET_TEMPLATES``; ``simple``: its
``SIMPLE_IMAGENET_TEMPLATES``, "a photo of a {c}." and a few more); ``cifar`` holds the 18
the paper used for CIFAR-10 and CIFAR-100 (openai/CLIP ``data/prompts.md``), which open_clip
does not ship. ``auto`` takes ``cifar`` for CIFAR-10's class names, else ``openai``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from simsiam.choices import TEMPLATE_SETS
from simsiam.errors import ConfigError
from simsiam.eval.knn import extract_features
from simsiam.fileio import read_utf8_text

# The CLIP paper's CIFAR-10 / CIFAR-100 prompts (openai/CLIP data/prompts.md): 18.
CIFAR_TEMPLATES = tuple(
    f"a {quality}photo of {article} {size}{{}}."
    for article in ("a", "the")
    for quality, size in [("", ""), ("blurry ", ""), ("black and white ", ""),
                          ("low contrast ", ""), ("high contrast ", ""), ("bad ", ""),
                          ("good ", ""), ("", "small "), ("", "big ")])
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")


def templates(name: str, classnames: Sequence[str] = ()
              ) -> Sequence[str | Callable[[str], str]]:
    """The prompt templates ``name``: ``openai`` (the CLIP paper's 80 ImageNet prompts),
    ``cifar`` (its 18 CIFAR prompts), ``simple`` (open_clip's short list), ``auto``
    (``cifar`` when ``classnames`` are CIFAR-10's, else ``openai``), or a text file with one
    template per line holding ``{}`` where the class name goes (UTF-8, a byte order mark
    allowed).

    Raises:
        ConfigError: an unknown name, a missing file, or a line without ``{}``.
        DataError: the file is not UTF-8 text (naming the line, byte offset and fix).
    """
    from open_clip import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

    if name == "auto":
        name = "cifar" if tuple(classnames) == CIFAR10_CLASSES else "openai"
    if name == "cifar":
        return CIFAR_TEMPLATES
    if name == "openai":
        return OPENAI_IMAGENET_TEMPLATES
    if name == "simple":
        return SIMPLE_IMAGENET_TEMPLATES
    path = Path(name)
    if not path.is_file():
        raise ConfigError(f"--templates {name!r}: choose one of {TEMPLATE_SETS} or a text file "
                          "with one template per line, e.g. 'a photo of a {}.'")
    lines = [ln.strip() for ln in read_utf8_text(path, "--templates file").splitlines()
             if ln.strip()]
    bad = [ln for ln in lines if "{}" not in ln]
    if not lines or bad:
        raise ConfigError(f"--templates '{path}': every line needs {{}} where the class name "
                          f"goes ({'no lines' if not lines else repr(bad[0])})")
    return lines


def class_prompts_name(folder_name: str) -> str:
    """The class name put in the prompts for a class folder: underscores become spaces."""
    return folder_name.replace("_", " ")


@torch.no_grad()
def zeroshot_classifier(model: Any, classnames: Sequence[str],
                        prompt_templates: Sequence[str | Callable[[str], str]],
                        device: torch.device | str = "cpu") -> torch.Tensor:
    """``(embed_dim, C)`` float32 class embeddings (open_clip's
    ``build_zero_shot_classifier``: mean of the normalised prompt embeddings, normalised).

    Args:
        model: a :class:`~simsiam.methods.clip.CLIP` (``encode_text``, ``context_length``).
        classnames: C names, in label order.
        prompt_templates: format strings with ``{}`` or callables ``name -> prompt``.
    """
    from open_clip import build_zero_shot_classifier

    from simsiam.data.tokens import clip_tokenizer

    was_training = model.text.training
    model.text.eval()
    try:
        return build_zero_shot_classifier(model, clip_tokenizer(model.context_length),
                                          list(classnames), list(prompt_templates),
                                          num_classes_per_batch=10, device=device).float()
    finally:
        model.text.train(was_training)


@torch.no_grad()
def zeroshot_accuracy(model: Any, images: np.ndarray, labels: np.ndarray,
                      classnames: Sequence[str],
                      prompt_templates: Sequence[str | Callable[[str], str]],
                      image_size: int, normalize: str, device: torch.device | str = "cpu",
                      batch_size: int = 256) -> dict[str, float]:
    """Zero-shot top-1 and top-5 (percent; top-5 = top-C when there are fewer classes).

    Args:
        images: ``(N, S, S, 3)`` uint8; labels ``(N,)`` int64 indices into ``classnames``.

    Returns:
        ``{"top1": .., "top5": .., "images": N, "classes": C, "templates": len}``.
    """
    weights = zeroshot_classifier(model, classnames, prompt_templates, device)
    feats = extract_features(model.backbone, images, image_size, normalize, device, batch_size,
                             l2_normalize=False, distributed=False)
    emb = F.normalize(model.image_projection(feats).float(), dim=1)
    top = (emb @ weights).topk(min(5, len(classnames)), dim=1).indices.cpu()
    y = torch.as_tensor(labels, dtype=torch.int64)[:, None]
    return {"top1": 100.0 * (top[:, :1] == y).any(1).float().mean().item(),
            "top5": 100.0 * (top == y).any(1).float().mean().item(),
            "images": len(labels), "classes": len(classnames),
            "templates": len(prompt_templates)}

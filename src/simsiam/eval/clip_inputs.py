"""What CLIP's evaluation commands (``retrieval``, ``zeroshot``) read: a CLIP run's image
and text towers (:func:`load_clip_for_eval`), the held-out images of a caption table
(:func:`retrieval_images`) and a class folder with its class names
(:func:`zeroshot_images`, :func:`given_class_names`, :func:`class_names`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import OmegaConf

from simsiam.config import Config, load_config
from simsiam.data import CapWarning, ImageSet, caption_table_in, is_caption_source, load_data
from simsiam.errors import CheckpointError, SimSiamError
from simsiam.eval.zeroshot import class_prompts_name
from simsiam.fileio import read_utf8_text
from simsiam.methods import build_method
from simsiam.weights.files import load_backbone_file, load_checkpoint

__all__ = ["caption_source", "class_names", "clip_state_files", "given_class_names",
           "load_clip_for_eval", "retrieval_images", "run_config_from", "zeroshot_images"]


def run_config_from(d: dict[str, Any]) -> Config:
    """A run's saved config (a dict) as a :class:`~simsiam.config.Config`, read as it was
    run (no re-validation: a LiT run's image_init file may have moved since)."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), d))


def clip_state_files(path: Path) -> tuple[dict[str, torch.Tensor], Config, str]:
    """(the whole CLIP state dict, its run config, where it came from) for a run directory,
    a ``backbone[_init].safetensors`` or ``text_tower[_init].safetensors`` (the other one
    beside it), or a ``checkpoints/last.pt``.

    Raises:
        CheckpointError: a missing file, or files that are not a CLIP run's.
    """
    if not path.exists():
        raise CheckpointError(f"checkpoint '{path}' does not exist: pass a CLIP run directory, "
                              "its backbone.safetensors or its checkpoints/last.pt")
    if path.is_dir():
        if (path / "text_tower.safetensors").is_file():
            path = path / "text_tower.safetensors"
        elif (path / "checkpoints" / "last.pt").is_file():
            path = path / "checkpoints" / "last.pt"
        else:
            raise CheckpointError(f"'{path}' holds no text_tower.safetensors or "
                                  "checkpoints/last.pt: is it a CLIP run (--method clip)?")
    if path.suffix == ".pt":
        obj = load_checkpoint(path)
        cfg = obj.get("config")
        if not isinstance(cfg, dict) or cfg.get("method") != "clip":
            raise CheckpointError(f"'{path}' is not a checkpoint of a CLIP run (its method is "
                                  f"{cfg.get('method') if isinstance(cfg, dict) else None!r})")
        return obj["model"], run_config_from(cfg), str(path)
    init = "_init" if path.stem.endswith("_init") else ""
    text = path.with_name(f"text_tower{init}.safetensors")
    image = path.with_name(f"backbone{init}.safetensors")
    for needed in (text, image):
        if not needed.is_file():
            raise CheckpointError(f"'{needed}' is missing: a CLIP model is the image tower "
                                  f"({image.name}) and the text tower ({text.name}) side by "
                                  "side, as a CLIP run exports them")
    text_state, meta = load_backbone_file(text)
    if meta.get("method") != "clip" or "config" not in meta:
        raise CheckpointError(f"'{text}' is not a CLIP text tower exported by simsiam")
    image_state, _ = load_backbone_file(image)
    state = text_state | {f"backbone.{k}": v for k, v in image_state.items()}
    return state, run_config_from(yaml.safe_load(meta["config"])), f"{image} + {text.name}"


def load_clip_for_eval(path: str | Path) -> tuple[Any, Config, dict[str, Any]]:
    """A CLIP model in eval mode, its run config, and its input settings.

    Returns:
        ``(model, cfg, info)`` with ``info``: ``arch`` (the image tower's backbone),
        ``image_size``, ``normalize``, ``seed``,
        ``holdout_fraction``, ``source`` (the run's data), ``where`` (the files read),
        ``data`` (the run's data section).

    Raises:
        CheckpointError: missing files, not a CLIP run, or weights that do not fit (names
            the keys).
    """
    state, cfg, where = clip_state_files(Path(path))
    cfg.model.image_init, cfg.model.lock_image = None, False  # the weights come from state
    model = build_method("clip", cfg.model, cfg.data.image_size)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{where} does not fit the run's CLIP model: missing keys "
                              f"{missing[:10]}, unexpected keys {unexpected[:10]}")
    info = {"arch": cfg.model.backbone, "image_size": cfg.data.image_size,
            "normalize": cfg.augment.normalize,
            "seed": cfg.train.seed, "holdout_fraction": cfg.data.holdout_fraction,
            "source": cfg.data.source, "where": where, "data": cfg.data}
    return model.eval(), cfg, info


def retrieval_images(source: str, info: dict[str, Any], image_size: int,
                     holdout_fraction: float | None = None, image_root: str | None = None,
                     split: str = "test", seed: int | None = None,
                     progress: bool = True) -> ImageSet:
    """The images (with captions) to retrieve among: the held-out part of ``source``
    (``split="test"``, split by image with ``seed``, None: the run's) or all of it
    (``"all"``). The run's own data is read as the run read it (its image root and
    columns); ``holdout_fraction`` None: the run's.

    Raises:
        SimSiamError: the split leaves no images.
    """
    run_data = info["data"]
    overrides = {"data.source": source, "data.image_size": image_size,
                 "data.holdout_fraction": (holdout_fraction if holdout_fraction is not None
                                           else info["holdout_fraction"])}
    if Path(source) == Path(run_data.source):  # the run's own data: read it as it did
        overrides |= {"data.image_root": run_data.image_root,
                      "data.image_column": run_data.image_column,
                      "data.caption_column": run_data.caption_column}
    if image_root:
        overrides["data.image_root"] = image_root
    if split == "all":
        overrides["data.holdout_fraction"] = 0.0
    data_cfg = load_config(None, overrides).data
    splits = load_data(data_cfg, seed if seed is not None else info["seed"], progress=progress)
    chosen = splits.train if split == "all" else splits.test
    if chosen is None or len(chosen) == 0:
        raise SimSiamError(f"'{source}' leaves no held-out images (data.holdout_fraction = "
                           f"{data_cfg.holdout_fraction}): pass --holdout-fraction, or --split "
                           "all to retrieve among every image")
    return chosen


def caption_source(source: str, given: bool) -> str:
    """A caption table or shards for ``retrieval``: a folder holding ``captions.csv``
    (``.tsv``, ``.jsonl``) stands for it. ``given``: the user named it (else it is the
    run's data, as the run recorded it).

    Raises:
        SimSiamError: a path that does not exist (the run's own data named as the run
            recorded it, relative to where it started), or a source without captions.
    """
    path = Path(source).expanduser()
    table = caption_table_in(path) if path.is_dir() else None
    if table is not None:
        return str(table)
    if not is_caption_source(source):
        raise SimSiamError(f"'{source}' has no captions: retrieval needs a caption table "
                           "(CSV, TSV or JSONL, or a folder holding captions.csv) or WebDataset "
                           "shards")
    if "{" not in source and "::" not in source and not path.exists():
        where = "--data" if given else "the run's data (as recorded in its config, relative " \
            "to the folder the run was started from)"
        raise SimSiamError(f"{where} '{source}' does not exist here: pass --data with its path")
    return source


def given_class_names(spec: str | None) -> list[str] | None:
    """The class names ``spec`` (``--classnames``) gives: comma-separated, or a text file
    with one per line (UTF-8, a byte order mark allowed); None when it is empty. Cheap:
    call it before any work, so that a bad file is refused at once.

    Raises:
        SimSiamError: a path-like ``spec`` that is no file, or an empty name.
        DataError: the file is not UTF-8 text (naming the line, byte offset and fix).
    """
    if not spec:
        return None
    path = Path(spec)
    if path.is_file():
        names = [ln.strip() for ln in read_utf8_text(path, "--classnames file").splitlines()
                 if ln.strip()]
    elif "," not in spec and (path.suffix or "/" in spec):
        raise SimSiamError(f"--classnames '{spec}': no such file (give a text file "
                           "with one name per line, or the names separated by commas)")
    else:
        names = [c.strip() for c in spec.split(",")]
    if not all(names):
        raise SimSiamError(f"--classnames {spec!r} holds an empty name: give one "
                           "non-empty name per class folder")
    return names


def class_names(given: list[str] | None, folders: list[str]) -> list[str]:
    """The class names for the prompts: ``given`` (:func:`given_class_names`), else the
    folder names (``_`` -> space).

    Raises:
        SimSiamError: ``given`` does not hold one name per folder.
    """
    if given is None:
        return [class_prompts_name(c) for c in folders]
    names = given
    if len(names) != len(folders):
        raise SimSiamError(f"--classnames gives {len(names)} names for {len(folders)} class "
                           f"folders ({', '.join(folders[:10])}); give one per folder, in "
                           "sorted folder order")
    return names


def zeroshot_images(data: str, info: dict[str, Any], image_size: int, split: str = "test",
                    per_class: int | None = None,
                    progress: bool = True) -> tuple[ImageSet, Path]:
    """(the labelled images, the folder read): ``data``'s test/ (or val/) split when it
    has one and ``split="test"``, else the whole folder; ``per_class`` caps each class
    (the caller's own choice: no CapWarning).

    Raises:
        SimSiamError: a folder without class subfolders.
    """
    root = Path(data).expanduser()
    split_dir = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    source = split_dir if split == "test" and split_dir is not None else root
    data_cfg = load_config(None, {"data.source": str(source), "data.image_size": image_size,
                                  "data.holdout_fraction": 0.0,
                                  "data.per_class": per_class}).data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CapWarning)
        images = load_data(data_cfg, info["seed"], progress=progress).train
    if not images.labelled:
        raise SimSiamError(f"'{data}' has no class folders (one class), so there is "
                           "nothing to classify: zero-shot needs one subfolder per class")
    return images, source

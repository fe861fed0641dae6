"""CLIP's evaluation subcommands: ``simsiam retrieval`` and ``simsiam zeroshot``.

Both load a CLIP run's image and text towers (:func:`load_clip_for_eval`) and print one
line: ``retrieval i2t R@1=.. R@5=.. R@10=.. t2i R@1=.. R@5=.. R@10=..`` on the held-out
images of a caption table (split by image with the run's seed, as in training), and
``zeroshot top1=.. top5=..`` on a class-folder dataset (class names from the folder names,
prompts from the CLIP paper). The image tower alone is an ordinary exported backbone, so
``knn``, ``linear``, ``embed`` and ``neighbors`` take it as they take any other.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Any

import torch

from simsiam import cliflags
from simsiam.distributed.context import resolve_device
from simsiam.errors import CheckpointError, SimSiamError


def _config_from(d: dict[str, Any]):
    """A run's saved config (a dict) as a :class:`~simsiam.config.Config`, read as it was
    run (no re-validation: a LiT run's image_init file may have moved since)."""
    from omegaconf import OmegaConf

    from simsiam.config import Config

    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), d))


def _clip_files(path: Path) -> tuple[dict[str, torch.Tensor], Any, str]:
    """(the whole CLIP state dict, its run config, where it came from) for a run directory,
    a ``backbone[_init].safetensors`` or ``text_tower[_init].safetensors`` (the other one
    beside it), or a ``checkpoints/last.pt``."""
    import yaml

    from simsiam.train.checkpoint import load_backbone_file, load_checkpoint

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
        return obj["model"], _config_from(cfg), str(path)
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
    return state, _config_from(yaml.safe_load(meta["config"])), f"{image} + {text.name}"


def load_clip_for_eval(path: str | Path) -> tuple[Any, Any, dict[str, Any]]:
    """A CLIP model in eval mode, its run config, and its input settings.

    Returns:
        ``(model, cfg, info)`` with ``info``: ``image_size``, ``normalize``, ``seed``,
        ``holdout_fraction``, ``source`` (the run's data), ``where`` (the files read).

    Raises:
        CheckpointError: missing files, not a CLIP run, or weights that do not fit (names
            the keys).
    """
    from simsiam.methods import build_method

    state, cfg, where = _clip_files(Path(path))
    cfg.model.image_init, cfg.model.lock_image = None, False  # the weights come from state
    model = build_method("clip", cfg.model, cfg.data.image_size)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{where} does not fit the run's CLIP model: missing keys "
                              f"{missing[:10]}, unexpected keys {unexpected[:10]}")
    info = {"image_size": cfg.data.image_size, "normalize": cfg.augment.normalize,
            "seed": cfg.train.seed, "holdout_fraction": cfg.data.holdout_fraction,
            "source": cfg.data.source, "where": where, "data": cfg.data}
    return model.eval(), cfg, info


def _inputs(args: argparse.Namespace, info: dict[str, Any]) -> tuple[int, str]:
    size = args.image_size if args.image_size is not None else info["image_size"]
    norm = args.normalize if args.normalize is not None else info["normalize"]
    return size, norm


def cmd_retrieval(args: argparse.Namespace) -> int:
    """Recall@1/5/10 both ways on the held-out images of a caption table."""
    from simsiam.config import load_config
    from simsiam.data.dataset import load_data
    from simsiam.eval.retrieval import retrieval_line, retrieval_record

    model, cfg, info = load_clip_for_eval(args.checkpoint)
    size, norm = _inputs(args, info)
    source = _caption_source(args.data or info["source"], given=args.data is not None)
    run_data = info["data"]
    overrides = {"data.source": source, "data.image_size": size,
                 "data.holdout_fraction": (args.holdout_fraction
                                           if args.holdout_fraction is not None
                                           else info["holdout_fraction"])}
    if Path(source) == Path(run_data.source):  # the run's own data: read it as it did
        overrides |= {"data.image_root": run_data.image_root,
                      "data.image_column": run_data.image_column,
                      "data.caption_column": run_data.caption_column}
    if args.image_root:
        overrides["data.image_root"] = args.image_root
    if args.split == "all":
        overrides["data.holdout_fraction"] = 0.0
    data_cfg = load_config(None, overrides).data
    seed = args.seed if args.seed is not None else info["seed"]
    splits = load_data(data_cfg, seed, progress=not args.no_progress)
    chosen = splits.train if args.split == "all" else splits.test
    if chosen is None or len(chosen) == 0:
        raise SimSiamError(f"'{source}' leaves no held-out images (data.holdout_fraction = "
                           f"{data_cfg.holdout_fraction}): pass --holdout-fraction, or --split "
                           "all to retrieve among every image")
    device = resolve_device(args.device)
    record = retrieval_record(model.to(device), chosen.images, chosen.captions, size, norm,
                              device)
    print(retrieval_line(record))
    which = "held-out" if args.split == "test" else "(all)"
    print(f"retrieval: {record['retrieval_images']} {which} images, "
          f"{record['retrieval_captions']} captions of '{source}' (model {info['where']})")
    return 0


def _caption_source(source: str, given: bool) -> str:
    """A caption table or shards for ``retrieval``: a folder holding ``captions.csv``
    (``.tsv``, ``.jsonl``) stands for it.

    Raises:
        SimSiamError: a path that does not exist (the run's own data named as the run
            recorded it, relative to where it started), or a source without captions.
    """
    from simsiam.data.captions import caption_table_in, is_caption_source

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


def _classnames(args: argparse.Namespace, folders: list[str]) -> list[str]:
    from simsiam.eval.zeroshot import class_prompts_name

    if not args.classnames:
        return [class_prompts_name(c) for c in folders]
    path = Path(args.classnames)
    if path.is_file():
        names = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()
                 if ln.strip()]
    elif "," not in args.classnames and (path.suffix or "/" in args.classnames):
        raise SimSiamError(f"--classnames '{args.classnames}': no such file (give a text file "
                           "with one name per line, or the names separated by commas)")
    else:
        names = [c.strip() for c in args.classnames.split(",")]
    if not all(names):
        raise SimSiamError(f"--classnames {args.classnames!r} holds an empty name: give one "
                           "non-empty name per class folder")
    if len(names) != len(folders):
        raise SimSiamError(f"--classnames gives {len(names)} names for {len(folders)} class "
                           f"folders ({', '.join(folders[:10])}); give one per folder, in "
                           "sorted folder order")
    return names


def cmd_zeroshot(args: argparse.Namespace) -> int:
    """Zero-shot top-1/top-5 on a class-folder dataset with prompt ensembling."""
    from simsiam.config import load_config
    from simsiam.data.dataset import CapWarning, load_data
    from simsiam.eval.zeroshot import templates, zeroshot_accuracy

    model, cfg, info = load_clip_for_eval(args.checkpoint)
    size, norm = _inputs(args, info)
    root = Path(args.data).expanduser()
    split_dir = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    source = split_dir if args.split == "test" and split_dir is not None else root
    data_cfg = load_config(None, {"data.source": str(source), "data.image_size": size,
                                  "data.holdout_fraction": 0.0,
                                  "data.per_class": args.per_class}).data
    with warnings.catch_warnings():  # --per-class is this command's own cap: said below
        warnings.simplefilter("ignore", CapWarning)
        images = load_data(data_cfg, info["seed"], progress=not args.no_progress).train
    if not images.labelled:
        raise SimSiamError(f"'{args.data}' has no class folders (one class), so there is "
                           "nothing to classify: zero-shot needs one subfolder per class")
    names = _classnames(args, images.classes)
    prompt_templates = templates(args.templates, names)
    chosen = args.templates
    if chosen == "auto":
        chosen = "auto: " + ("cifar, the CIFAR-10 class names" if len(prompt_templates) == 18
                             else "openai, names other than CIFAR-10's")
    device = resolve_device(args.device)
    res = zeroshot_accuracy(model.to(device), images.images, images.labels, names,
                            prompt_templates, size, norm, device)
    print(f"zeroshot top1={res['top1']:.2f}% top5={res['top5']:.2f}%")
    cap = f" (--per-class {args.per_class})" if args.per_class else ""
    print(f"zeroshot: {res['images']} images of '{source}'{cap}, {res['classes']} "
          f"classes, {res['templates']} prompt templates ({chosen}); model "
          f"{info['where']}")
    return 0


def add_clip_parsers(sub) -> None:
    """Register ``retrieval`` and ``zeroshot`` on the ``simsiam`` subparsers."""
    from simsiam.eval.zeroshot import TEMPLATE_SETS

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--checkpoint", required=True, help="a CLIP run directory, its "
                       "backbone.safetensors / backbone_init.safetensors (the text tower "
                       "file beside it is read too) or its checkpoints/last.pt")
        p.add_argument("--image-size", type=cliflags.IMAGE_SIZE,
                       help="input side (default: the run's)")
        p.add_argument("--normalize", choices=("auto", "cifar10", "imagenet"),
                       help="input normalisation (default: the run's)")
        p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")

    p = sub.add_parser("retrieval", help="CLIP: image-text recall@1/5/10 on held-out images")
    common(p)
    p.add_argument("--data", help="caption table (CSV/TSV/JSONL) or WebDataset shards "
                   "(default: the run's data)")
    p.add_argument("--image-root", help="folder the table's image paths are relative to")
    p.add_argument("--split", choices=("test", "all"), default="test", help="test: the "
                   "held-out images, split by image with the run's seed (default); all: every "
                   "image of --data")
    p.add_argument("--holdout-fraction", type=cliflags.HOLDOUT, help="default: the run's")
    p.add_argument("--seed", type=cliflags.SEED, help="seed of the split (default: the run's)")
    p.set_defaults(func=cmd_retrieval)
    p = sub.add_parser("zeroshot", help="CLIP: zero-shot top-1/top-5 on a class folder")
    common(p)
    p.add_argument("--data", required=True, help="class-folder dataset (its test/ or val/ "
                   "split when present)")
    p.add_argument("--split", choices=("test", "all"), default="test",
                   help="test: the folder's test/ (or val/) split when it has one (default)")
    p.add_argument("--classnames", help="names for the prompts, one per class folder in sorted "
                   "order: comma-separated or a text file (default: folder names, '_' -> ' ')")
    p.add_argument("--templates", default="auto", help=f"prompt templates: {TEMPLATE_SETS} "
                   "(openai: the CLIP paper's 80 ImageNet prompts; cifar: its 18 CIFAR ones; "
                   "auto: cifar for CIFAR-10's class names, else openai) or a file with one "
                   "template per line ({} = the class name)")
    p.add_argument("--per-class", type=cliflags.PER_CLASS, help="at most N images per class")
    p.set_defaults(func=cmd_zeroshot)

"""Command line: ``simsiam pretrain|demo|bench|knn|linear|embed|report|reproduce|compare|...``.

Each subcommand is a thin call into the library. Settings come from a YAML preset
(``--config``) read by OmegaConf; the flags below override single fields.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

import yaml

from simsiam import cliflags
from simsiam.compile_cache import use_compile_cache
from simsiam.config import Config, load_config
from simsiam.distributed.context import launched_as_main, launcher
from simsiam.errors import (
    CollapseError,
    ConfigError,
    ConfigNotice,
    DataWarning,
    DiskFullError,
    SimSiamError,
)
from simsiam.eval.cli import add_eval_parsers
from simsiam.methods import METHODS
from simsiam.train.interrupt import RunInterrupted

# The demo's data: the workplace's CIFAR-10 JPEG copy beside the checkout (make demo runs
# from the repository root), else torchvision's CIFAR-10 download.
SHARED_CIFAR_DIR = Path("..") / "shared" / "data" / "cifar10-jpeg"
# CLIP's demo data: 1,000 Flickr8k photographs with 5 captions each, beside the checkout.
SHARED_FLICKR_CAPTIONS = Path("..") / "shared" / "data" / "flickr8k-1k" / "captions.csv"
# the demo's preset per method (a method without one runs demo-cpu with its own section)
DEMO_PRESETS = {"clip": "clip-cpu"}


def _parse_set(items: list[str]) -> dict:
    """``["optim.base_lr=0.4", ...]`` -> ``{"optim.base_lr": 0.4}`` (values read as YAML)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: write KEY=VALUE, e.g. --set optim.base_lr=0.4")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _overrides(args: argparse.Namespace) -> dict:
    flags = {"method": args.method, "data.source": args.data, "train.out": args.out,
             "train.epochs": args.epochs,
             "train.batch_size": args.batch_size, "data.per_class": args.per_class,
             "train.device": args.device, "train.seed": args.seed,
             "eval.stop_on_collapse": True if args.stop_on_collapse else None,
             "data.strict": True if args.strict else None}
    given = {k: v for k, v in flags.items() if v is not None}
    sets = _parse_set(args.set or [])
    both = sorted(set(given) & set(sets))
    if both:
        raise ConfigError(f"{', '.join(both)} given both as a flag and with --set; use one")
    return sets | given


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", choices=tuple(METHODS), help="simsiam (default) or a "
                   "comparison method: its settings are model.METHOD.*, its views its authors' "
                   "recipe (augment.recipe auto), and the settings its authors used in other "
                   "sections (SwAV's crops; LARS, MoCo v2's lr, except on the cpu presets: "
                   "optim.method_optimizer) replace the preset's; --set still wins")
    p.add_argument("--data", help="a folder of images: flat (unlabelled: label-free signals "
                   "only) or one subfolder per class (labels feed the kNN monitor and probe "
                   "only, never training); with train/ and test/ (or val/) those are the "
                   "splits, else a seeded 10%% (data.holdout_fraction) is held out for the "
                   "monitor. Or cifar10 / cifar100 (torchvision's download), a caption table "
                   "(.csv/.tsv/.jsonl), or WebDataset shards ('shards/shard-{000000..000012}"
                   ".tar': a brace pattern, not a glob; simsiam shard writes them)")
    p.add_argument("--out", help="run directory (default from the config)")
    p.add_argument("--epochs", type=cliflags.EPOCHS)
    p.add_argument("--batch-size", type=cliflags.BATCH)
    p.add_argument("--per-class", type=cliflags.PER_CLASS,
                   help="at most N training images per class (a "
                   "flat folder is one class; a preset's cap that leaves images out warns)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"))
    p.add_argument("--seed", type=cliflags.SEED)
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--stop-on-collapse", action="store_true",
                   help="stop when the collapse guard fires (the last checkpoint is kept)")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--strict", action="store_true",
                   help="stop on the first image file that cannot be decoded (default: skip "
                   "such files with a warning naming each)")
    p.add_argument("--stop-after-epoch", type=cliflags.POSITIVE_INT, metavar="N",
                   help="save and stop after epoch N of the schedule (continue with --resume)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars: one line "
                   "per epoch (loss, the monitor's figures, seconds) instead")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override any config key, e.g. --set optim.base_lr=0.4 (repeatable)")


def cmd_pretrain(args: argparse.Namespace) -> int:
    from simsiam.train.trainer import pretrain

    cfg = load_config(args.config, _overrides(args))
    res = pretrain(cfg, resume=args.resume, overwrite=args.overwrite,
                   progress=not args.no_progress, stop_after_epoch=args.stop_after_epoch)
    if not launched_as_main():
        return 0
    if res.backbone_path is None:
        print(f"pretrain: stopped after epoch {res.epochs} of {cfg.train.epochs} "
              f"(--stop-after-epoch), {res.steps} steps; continue with: {launcher()} pretrain "
              f"--config {res.run_dir / 'config.yaml'} --out {res.run_dir} --resume")
        return 0
    last = max(res.knn) if res.knn else None
    knn = f" knn_top1={res.knn[last]:.2f}%" if last is not None else ""
    print(f"pretrain: {res.epochs} epochs, {res.steps} steps, final loss "
          f"{res.epoch_loss[res.epochs]:.4f}{knn}; backbone -> {res.backbone_path}")
    from simsiam.eval.monitor import start_name

    for line in (_retrieval_summary(res, start_name(cfg)),
                 _copy_retrieval_line(res, start_name(cfg))):
        if line:
            print(line)
    return 0


def _retrieval_summary(res, start: str) -> str | None:
    """``pretrain: retrieval i2t R@10 15.0% t2i R@10 14.9% at epoch 30 (random init: ...)``
    for a method whose monitor measured text-image retrieval (CLIP)."""
    measured = {e: v for e, v in res.evals.items() if "retrieval_i2t_r10" in v}
    if not measured or max(measured) == 0:
        return None
    last = measured[max(measured)]
    text = (f"pretrain: retrieval i2t R@10 {last['retrieval_i2t_r10']:.1f}% t2i R@10 "
            f"{last['retrieval_t2i_r10']:.1f}% at epoch {max(measured)}")
    if 0 in measured:
        first = measured[0]
        text += (f" ({start}: {first['retrieval_i2t_r10']:.1f}% / "
                 f"{first['retrieval_t2i_r10']:.1f}%); `simsiam retrieval` gives all six")
    return text


def _copy_retrieval_line(res, start: str = "random init") -> str | None:
    """``pretrain: copy retrieval top1 26.0% (random init 21.5%) ...``: the label-free
    figure that says whether training helped, when the monitor measured it."""
    measured = {e: v for e, v in res.evals.items() if "copy_top1" in v}
    if not measured:
        return None
    if max(measured) == 0:
        return (f"pretrain: the monitor ran at the start only ({start}; eval.knn_every = 0): "
                f"copy retrieval top1 {measured[0]['copy_top1']:.1f}% before training; the "
                "trained encoder was not evaluated")
    last = measured[max(measured)]
    text = (f"pretrain: copy retrieval top1 {last['copy_top1']:.1f}% top5 "
            f"{last['copy_top5']:.1f}% at epoch {max(measured)}")
    if 0 in measured and max(measured) > 0:
        text += (f" ({start}: {measured[0]['copy_top1']:.1f}% / "
                 f"{measured[0]['copy_top5']:.1f}%; backbone_init.safetensors beside it)")
    if not res.labelled:
        text += "; no labels, so no kNN accuracy"
    return text


def _demo_data(args: argparse.Namespace, method: str) -> str:
    """The demo's data: --data, else the shared CIFAR-10 folder (or torchvision's
    download); for CLIP the shared Flickr8k captions (there is no download to fall back on).
    """
    if args.data:
        return args.data
    if method == "clip":
        if not SHARED_FLICKR_CAPTIONS.is_file():
            raise SimSiamError(f"the CLIP demo reads '{SHARED_FLICKR_CAPTIONS}' (1,000 Flickr8k "
                               "photographs with captions), which is not here: pass --data "
                               "with a caption table (CSV/TSV/JSONL: image, caption)")
        return str(SHARED_FLICKR_CAPTIONS)
    return str(SHARED_CIFAR_DIR) if SHARED_CIFAR_DIR.is_dir() else "cifar10"


def cmd_demo(args: argparse.Namespace) -> int:
    """The CPU demo: pretrain on real images and compare the monitor's headline figure
    (kNN top-1; CLIP: image-to-text R@10) with the random init's."""
    from simsiam.train.trainer import pretrain

    method = args.method or "simsiam"
    data = _demo_data(args, method)
    overrides = _overrides(args) | {"data.source": data, "eval.knn_at_start": True}
    cfg = load_config(args.config or DEMO_PRESETS.get(method, "demo-cpu"), overrides)
    # the demo's cap is its design (stated on the next line), not a surprise to warn about
    from simsiam.data import CapWarning

    warnings.filterwarnings("ignore", category=CapWarning)
    amount = (f"{cfg.data.per_class} training images per class" if cfg.data.per_class
              else f"{1 - cfg.data.holdout_fraction:.0%} of the images for training")
    print(f"demo: {cfg.method} {cfg.model.backbone} ({cfg.model.stem} stem) on '{data}', "
          f"{cfg.train.epochs} epochs, batch {cfg.train.batch_size}, {cfg.data.image_size} px, "
          f"{amount}", flush=True)
    res = pretrain(cfg, resume=args.resume, overwrite=args.overwrite,
                   progress=not args.no_progress, stop_after_epoch=args.stop_after_epoch)
    if res.backbone_path is None:
        print(f"demo: stopped after epoch {res.epochs}; continue with: simsiam demo --resume")
        return 0
    print(f"demo: run directory {res.run_dir}; loss per epoch "
          + " ".join(f"{res.epoch_loss[e]:.3f}" for e in sorted(res.epoch_loss)))
    trained, random_init, what = _demo_headline(res)
    from simsiam.report import write_report

    summary = write_report(res.run_dir)
    print(f"demo: report {summary} (plots beside it)")
    start = "start" if cfg.model.image_init else "random_init"  # LiT starts from a backbone
    print(f"demo: {what} trained={trained:.1f}% {start}={random_init:.1f}% "
          f"({res.test_images} test images)")
    if trained < random_init + 5.0:
        print("demo: warning: the trained encoder beat random init by less than 5 points",
              file=sys.stderr)
    return 0


def _demo_headline(res) -> tuple[float, float, str]:
    """(trained, random init, name) of the demo's figure: CLIP's image-to-text R@10 when
    the monitor measured retrieval, else kNN top-1.

    Raises:
        SimSiamError: the monitor did not run at the start and at the end.
    """
    first, last = res.evals.get(0, {}), res.evals.get(res.epochs, {})
    if "retrieval_i2t_r10" in first and "retrieval_i2t_r10" in last:
        return last["retrieval_i2t_r10"], first["retrieval_i2t_r10"], "clip retrieval i2t R@10"
    if 0 not in res.knn or res.epochs not in res.knn:
        raise SimSiamError("the demo needs the monitor at the start and the end: keep "
                           "eval.knn_every > 0 and use data with held-out test images")
    return res.knn[res.epochs], res.knn[0], "knn_top1"


def cmd_bench(args: argparse.Namespace) -> int:
    from simsiam.bench import main_bench

    data = args.data or (str(SHARED_CIFAR_DIR) if SHARED_CIFAR_DIR.is_dir() else "cifar10")
    cfg = load_config(args.config or "demo-cpu", _overrides(args) | {"data.source": data})
    main_bench(cfg, progress=not args.no_progress, synthetic=args.synthetic,
               warmup=args.warmup, windows=args.windows, steps_per_window=args.steps)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Plots and a summary of a run directory."""
    from simsiam.report import write_report

    summary = write_report(args.run, embedding_points=args.points)
    print(f"report: {summary} (plots beside it)")
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    from simsiam.methods import build_method
    from simsiam.models.backbones import count_parameters

    cfg: Config = load_config(args.config, {"method": args.method} if args.method else {})
    model = build_method(cfg.method, cfg.model, cfg.data.image_size)
    parts = {name: m for name, m in model.named_children() if count_parameters(m, False)}
    print(f"{cfg.method}: {cfg.model.backbone} ({cfg.model.stem} stem), embedding "
          f"d={model.dim}; settings model.{cfg.method}.*")
    for name, module in parts.items():
        frozen = count_parameters(module, False) - count_parameters(module)
        extra = f"  (+{frozen:,} frozen)" if frozen else ""
        print(f"  {name:<10} {count_parameters(module):>13,}{extra}")
    print(f"  {'trainable':<10} {count_parameters(model):>13,}")
    print(f"input: {pipeline_words(cfg)}")
    return 0


def pipeline_words(cfg: Config) -> str:
    """``describe``'s input line: ``data.pipeline`` and, for a folder, what it resolves to."""
    from pathlib import Path

    from simsiam.data.dataset import resolve_pipeline
    from simsiam.data.folder import scan_image_folder, split_roots

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


def cmd_shard(args: argparse.Namespace) -> int:
    """Write an image folder into WebDataset shards (labels and splits kept)."""
    from simsiam.data.shard_writer import write_shards

    res = write_shards(args.folder, args.out, args.shard_size, args.strict,
                       progress=not args.no_progress)
    counts = ", ".join(f"{n:,} {split}" for split, n in res.samples.items())
    print(f"shard: {sum(res.samples.values()):,} images ({counts}) in {len(res.shards)} "
          f"shards under '{args.out}'; train with --data '{res.pattern}'")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simsiam", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pretrain", help="self-supervised pretraining")
    p.add_argument("--config", required=True, help="YAML preset, e.g. configs/cifar10.yaml")
    _add_run_flags(p)
    p.set_defaults(func=cmd_pretrain)
    p = sub.add_parser("demo", help="CPU demo on real CIFAR-10 images (configs/demo-cpu.yaml); "
                       "--method clip: on 1,000 captioned Flickr photos (configs/clip-cpu.yaml)")
    p.add_argument("--config", help="preset (default configs/demo-cpu.yaml; for --method clip "
                   "configs/clip-cpu.yaml)")
    _add_run_flags(p)
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("bench", help="images/s of the data pipeline, the model step and the "
                       "full training step; peak memory; MFU on GPU")
    p.add_argument("--config", help="preset (default configs/demo-cpu.yaml)")
    _add_run_flags(p)
    p.add_argument("--steps", type=cliflags.POSITIVE_INT, default=5, help="steps per timed window")
    p.add_argument("--windows", type=cliflags.POSITIVE_INT, default=5,
                   help="timed windows (median reported)")
    p.add_argument("--warmup", type=cliflags.COUNT, default=3, help="untimed steps first")
    p.add_argument("--synthetic", type=cliflags.SYNTHETIC, default=0, metavar="N",
                   help="N random images of the view size instead of --data")
    p.set_defaults(func=cmd_bench)
    add_eval_parsers(sub)
    p = sub.add_parser("shard", help="write an image folder into WebDataset shards (labels "
                       "and the train/test split kept), for --data 'OUT/shard-{...}.tar'")
    p.add_argument("folder", help="image folder (class subfolders; train/ and test/ kept)")
    p.add_argument("out", help="folder for the shards (nothing in it is replaced)")
    p.add_argument("--shard-size", type=cliflags.POSITIVE_INT, default=1000, metavar="N",
                   help="samples per shard (default 1000)")
    p.add_argument("--strict", action="store_true",
                   help="stop on the first file whose header cannot be read")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_shard)
    p = sub.add_parser("report", help="PNG plots and a markdown summary of a run")
    p.add_argument("run", help="run directory")
    p.add_argument("--points", type=cliflags.COUNT, default=2000,
                   help="held-out images in the t-SNE map (0: no map)")
    p.set_defaults(func=cmd_report)
    from simsiam.reproduce.cli import add_compare_parser
    from simsiam.reproduce.cli import add_parser as add_reproduce

    add_reproduce(sub)
    add_compare_parser(sub)
    p = sub.add_parser("describe", help="parameter counts per part of the model")
    p.add_argument("--config", required=True)
    p.add_argument("--method", choices=tuple(METHODS),
                   help="default: the config's (simsiam)")
    p.set_defaults(func=cmd_describe)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):
    if issubclass(category, ConfigNotice):  # once, from rank 0 under torchrun
        if launched_as_main():
            print(f"simsiam: note: {message}", file=file or sys.stderr, flush=True)
    elif issubclass(category, DataWarning):  # ours: the message says it all, no source line
        print(f"simsiam: warning: {message}", file=file or sys.stderr, flush=True)
    else:
        _default_show_warning(message, category, filename, lineno, file, line)


_default_show_warning = warnings.showwarning


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = _show_warning
    use_compile_cache()  # torch.compile's graphs under the project's cache: warm next time
    # Under torchrun every process reports; the others say which they are.
    who = "simsiam" if launched_as_main() else f"simsiam [rank {os.environ.get('RANK')}]"
    try:
        return args.func(args)
    except RunInterrupted as exc:
        print(f"{who} {args.command}: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except CollapseError as exc:
        print(f"{who} {args.command}: stopped: {exc}", file=sys.stderr)
        return 4
    except DiskFullError as exc:
        print(f"{who} {args.command}: error: {exc}", file=sys.stderr)
        return 5
    except SimSiamError as exc:
        print(f"{who} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except FloatingPointError as exc:
        print(f"{who} {args.command}: error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"{who} {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

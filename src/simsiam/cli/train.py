"""``simsiam pretrain``, ``demo`` and ``bench``.

Each command reads and checks its config first (:func:`simsiam.config.load_config`), then
runs the checks that need no data (:func:`simsiam.train.preflight.check_before_data`),
and only then imports the training library: a bad ``--set`` or a refused run directory
answers before the trainer, the methods and the data pipeline load. So those imports sit
inside the commands, after ``load_config`` (for that order, not to break an import cycle).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any

from simsiam.config import load_config
from simsiam.config.overrides import parse_set
from simsiam.errors import ConfigError
from simsiam.launch import launched_as_main, resume_command

__all__ = ["cmd_bench", "cmd_demo", "cmd_pretrain", "run_overrides"]


def run_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config overrides of a training command: its flags (``--epochs`` ->
    ``train.epochs``, ...) and ``--set KEY=VALUE``.

    Raises:
        ConfigError: a malformed ``--set``, or a key given both as a flag and with --set.
    """
    flags = {"method": args.method, "data.source": args.data, "train.out": args.out,
             "train.epochs": args.epochs,
             "train.batch_size": args.batch_size, "data.per_class": args.per_class,
             "train.device": args.device, "train.seed": args.seed,
             "eval.stop_on_collapse": True if args.stop_on_collapse else None,
             "data.strict": True if args.strict else None}
    given = {k: v for k, v in flags.items() if v is not None}
    sets = parse_set(args.set or [])
    both = sorted(set(given) & set(sets))
    if both:
        raise ConfigError(f"{', '.join(both)} given both as a flag and with --set; use one")
    return sets | given


def cmd_pretrain(args: argparse.Namespace) -> int:
    """Pretrain with ``--config`` and the flags; prints the result lines on rank 0."""
    cfg = load_config(args.config, run_overrides(args))
    from simsiam.train.preflight import check_before_data

    check_before_data(cfg, args.resume, args.overwrite, args.stop_after_epoch,
                      args.allow_changed_data)
    from simsiam.compile_cache import use_compile_cache
    from simsiam.train.result_lines import pretrain_lines
    from simsiam.train.trainer import pretrain

    use_compile_cache()  # torch.compile's graphs under the project's cache: warm next time
    res = pretrain(cfg, resume=args.resume, overwrite=args.overwrite,
                   progress=not args.no_progress, stop_after_epoch=args.stop_after_epoch,
                   allow_changed_data=args.allow_changed_data)
    if launched_as_main():
        for line in pretrain_lines(res, cfg):
            print(line)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The CPU demo: pretrain on real images and compare the monitor's headline figure
    (kNN top-1; CLIP: image-to-text R@10) with the random init's."""
    from simsiam.train.demo import demo_data, demo_preset

    data = demo_data(args.data, args.method)
    overrides = run_overrides(args) | {"data.source": data, "eval.knn_at_start": True}
    cfg = load_config(args.config or demo_preset(args.method), overrides)
    from simsiam.compile_cache import use_compile_cache
    from simsiam.data import CapWarning
    from simsiam.report import write_report
    from simsiam.train.preflight import check_before_data
    from simsiam.train.result_lines import demo_headline
    from simsiam.train.trainer import pretrain

    # the demo's cap is its design (stated on the next line), not a surprise to warn about
    warnings.filterwarnings("ignore", category=CapWarning)
    amount = (f"{cfg.data.per_class} training images per class" if cfg.data.per_class
              else f"{1 - cfg.data.holdout_fraction:.0%} of the images for training")
    print(f"demo: {cfg.method} {cfg.model.backbone} ({cfg.model.stem} stem) on '{data}', "
          f"{cfg.train.epochs} epochs, batch {cfg.train.batch_size}, {cfg.data.image_size} px, "
          f"{amount}", flush=True)
    check_before_data(cfg, args.resume, args.overwrite, args.stop_after_epoch,
                      args.allow_changed_data)
    use_compile_cache()
    res = pretrain(cfg, resume=args.resume, overwrite=args.overwrite,
                   progress=not args.no_progress, stop_after_epoch=args.stop_after_epoch,
                   allow_changed_data=args.allow_changed_data)
    if res.backbone_path is None:
        again = resume_command(res.run_dir, "demo", ["--data", data])
        print(f"demo: stopped after epoch {res.epochs}; continue with: {again}")
        return 0
    print(f"demo: run directory {res.run_dir}; loss per epoch "
          + " ".join(f"{res.epoch_loss[e]:.3f}" for e in sorted(res.epoch_loss)))
    trained, random_init, what = demo_headline(res)
    summary = write_report(res.run_dir)
    print(f"demo: report {summary} (plots beside it)")
    start = "start" if cfg.model.image_init else "random_init"  # LiT starts from a backbone
    print(f"demo: {what} trained={trained:.1f}% {start}={random_init:.1f}% "
          f"({res.test_images} test images)")
    if trained < random_init + 5.0:
        print("demo: warning: the trained encoder beat random init by less than 5 points",
              file=sys.stderr)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Throughput of the data pipeline, the model step and the full step (``bench``)."""
    from simsiam.train.demo import DEFAULT_DEMO_PRESET, default_image_data

    data = default_image_data(args.data)
    cfg = load_config(args.config or DEFAULT_DEMO_PRESET,
                      run_overrides(args) | {"data.source": data})
    from simsiam.bench import main_bench
    from simsiam.compile_cache import use_compile_cache

    use_compile_cache()
    main_bench(cfg, progress=not args.no_progress, synthetic=args.synthetic,
               warmup=args.warmup, windows=args.windows, steps_per_window=args.steps)
    return 0

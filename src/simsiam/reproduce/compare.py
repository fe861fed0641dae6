"""``simsiam compare``: SimSiam and the systems it is compared with, under one budget.

Source: SIMSIAM.md section 6 (the paper's claim: SimSiam is SimCLR without negatives, BYOL
without the momentum encoder, SwAV without online clustering; the seed's comparison
table). Everything but the method is held equal: the scale's preset (backbone, views,
data, batch, optimizer, epochs), then each method's own section ``model.<method>`` (the
published values) and the settings its authors used in other sections
(``Method.published``). Each method trains in its own process (so its peak memory is its
own) into ``OUT/METHOD``; a finished run with the same config is reused.
Outputs: ``OUT/compare.md`` (method, negatives, momentum encoder, queue, batch, kNN and
linear top-1, training time, peak memory), ``OUT/compare.json`` and ``OUT/compare.png``
(kNN accuracy per epoch for every method).

CLIP learns from captions: it joins a comparison whose data is a caption table or
WebDataset shards (the image methods then train on the same images, without their
captions), with its own CPU preset (``clip-cpu``: its optimizer and text tower) at the
``cpu`` scale. On such data, which has no labels, the table's figures are the label-free
ones: augmented-copy retrieval top-1 for every method and, for CLIP, held-out image-to-text
recall@10.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from simsiam.choices import COMPARE_SCALES
from simsiam.config import Config, config_to_yaml, load_config
from simsiam.data.captions import is_caption_source
from simsiam.errors import ConfigError, SimSiamError
from simsiam.fileio import atomic_write
from simsiam.methods import METHODS
from simsiam.reproduce.runner import CPU_OVERRIDES, PRESETS, finished_run, fmt, linear_top1
from simsiam.train.logger import knn_records, read_metrics

# the preset of a method that learns from captions, per scale
CAPTION_PRESETS = {"cpu": "clip-cpu"}
# held out by image on caption data, for every method (the 80/20 split of clip-cpu)
CAPTION_HOLDOUT = 0.2


@dataclass
class CompareRow:
    """One method's measurements: accuracies in percent, time in seconds (the training
    epochs only, kNN evaluations excluded), memory in MiB (CUDA: peak allocated; CPU:
    peak resident set of the training process)."""

    method: str
    negatives: bool
    momentum_encoder: bool
    queue: bool
    batch_size: int
    knn_top1: float | None
    linear_top1: float | None
    train_seconds: float
    copy_top1: float | None = None  # label-free: augmented-copy retrieval top-1, percent
    retrieval_i2t_r10: float | None = None  # CLIP: held-out image-to-text recall@10
    peak_mem_mib: float | None = None
    run_dir: str = ""
    status: str = ""


def method_config(method: str, budget: int, scale: str, data: str, out: Path,
                  extra: dict[str, Any] | None = None) -> Config:
    """The config of one method's run: the scale preset, ``--method``, the budget.

    Raises:
        ConfigError: unknown method or scale, a bad budget or override.
    """
    if scale not in COMPARE_SCALES:
        raise ConfigError(f"--scale {scale!r} is unknown: choose one of {COMPARE_SCALES}")
    if method not in METHODS:
        raise ConfigError(f"--methods: {method!r} is unknown: choose from {tuple(METHODS)}")
    if budget < 1:
        raise ConfigError(f"--budget {budget}: use a positive number of epochs")
    preset = PRESETS[scale]
    if METHODS[method].batch_kind == "captions":
        if not is_caption_source(data):
            raise ConfigError(f"--methods {method}: it learns from captions, and --data "
                              f"'{data}' has none; compare it on a caption table (CSV/TSV/"
                              "JSONL) or WebDataset shards, e.g. --data ../shared/data/"
                              "flickr8k-1k/captions.csv, or leave it out of --methods")
        if scale != "cpu":
            raise ConfigError(f"--methods {method} --scale {scale}: CLIP has a preset for the "
                              "cpu scale only (clip-cpu); use --scale cpu")
        preset = CAPTION_PRESETS[scale]
    over: dict[str, Any] = dict(CPU_OVERRIDES) if scale == "cpu" else {}
    if is_caption_source(data):  # every method measured on the same held-out images
        over["data.holdout_fraction"] = CAPTION_HOLDOUT
    over |= {"method": method, "data.source": data, "train.out": str(out / method),
             "train.epochs": budget, "eval.knn_every": 1, "eval.online_probe": False}
    return load_config(preset, over | (extra or {}))


def default_methods(data: str) -> list[str]:
    """Every registered method; those that learn from captions only when ``data`` has
    them."""
    return [m for m, cls in METHODS.items()
            if cls.batch_kind != "captions" or is_caption_source(data)]


def _train(cfg: Config, root: Path, overwrite: bool, progress: bool) -> None:
    """Train in a new process from the resolved config (it names its method, so it
    loads verbatim)."""
    cfg_path = root / "configs" / f"{cfg.method}.yaml"
    cfg_path.parent.mkdir(parents=True, exist_ok=True)
    text = config_to_yaml(cfg)
    atomic_write(cfg_path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    cmd = [sys.executable, "-m", "simsiam", "pretrain", "--config", str(cfg_path)]
    cmd += ["--overwrite"] if overwrite else []
    cmd += [] if progress else ["--no-progress"]
    code = subprocess.run(cmd).returncode
    if code != 0:
        raise SimSiamError(f"compare: {cfg.method} stopped with exit code {code} (its "
                           f"message is above); command: {shlex.join(cmd)}")


def run_compare(methods: list[str], budget: int, scale: str = "cpu", data: str = "",
                out: str | Path = "runs/compare", overwrite: bool = False,
                progress: bool = True, linear: bool = True, linear_epochs: int | None = None,
                extra: dict[str, Any] | None = None) -> list[CompareRow]:
    """Train (or reuse) every method, then write the table, JSON and plot.

    Raises:
        ConfigError: a bad method, scale, budget or override (before anything runs), or a
            run directory holding another run while ``overwrite`` is False.
        SimSiamError: a method's training failed.
    """
    from simsiam.methods import TRAITS

    root = Path(out)
    configs = [method_config(m, budget, scale, data, root, extra) for m in methods]
    rows = []
    for cfg in configs:
        status = "reused"
        if not finished_run(cfg):
            print(f"compare: {cfg.method} -> {cfg.train.out}", flush=True)
            _train(cfg, root, overwrite, progress)
            status = "ok"
        recs = read_metrics(cfg.train.out, missing_ok=True)
        epochs = [r for r in recs if r.get("kind") == "epoch"]
        knn = knn_records(recs)
        last = ([r for r in recs if r.get("kind") == "eval"] or [{}])[-1]
        mem = [r["peak_mem_mib"] for r in epochs if "peak_mem_mib" in r]
        labelled = bool(knn)
        lin = (linear_top1(cfg, linear_epochs or (30 if scale == "cpu" else 100))
               if linear and labelled else None)
        neg, mom, queue = TRAITS[cfg.method]
        rows.append(CompareRow(cfg.method, neg, mom, queue, cfg.train.batch_size,
                               knn[-1]["knn_top1"] if knn else None, lin,
                               sum(r["seconds"] for r in epochs),
                               last.get("copy_top1"), last.get("retrieval_i2t_r10"),
                               max(mem) if mem else None, cfg.train.out, status))
    _write(root, scale, budget, rows)
    return rows


def _minutes(seconds: float) -> str:
    """``1.3 min``, or ``42 s`` under a minute."""
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def format_compare(rows: list[CompareRow], scale: str, budget: int) -> str:
    """The comparison as a Markdown table (the seed's columns)."""
    def yn(v: bool) -> str:
        return "yes" if v else "no"

    f = fmt
    labels = any(r.knn_top1 is not None for r in rows)
    head = ("kNN top-1 % | linear top-1 %" if labels
            else "copy top-1 % | retrieval i2t R@10 %")
    lines = [f"## Methods side by side: {budget} epochs, scale {scale}", "",
             "| method | negatives | momentum encoder | memory bank / queue | batch | "
             f"{head} | train time | peak memory MiB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        figures = (f"{f(r.knn_top1, '.2f')} | {f(r.linear_top1, '.2f')}" if labels
                   else f"{f(r.copy_top1, '.1f')} | {f(r.retrieval_i2t_r10, '.1f')}")
        lines.append(f"| {r.method} | {yn(r.negatives)} | {yn(r.momentum_encoder)} | "
                     f"{yn(r.queue)} | {r.batch_size} | {figures} | "
                     f"{_minutes(r.train_seconds)} | {f(r.peak_mem_mib, '.0f')} |")
    return "\n".join(lines) + "\n"


def _write(root: Path, scale: str, budget: int, rows: list[CompareRow]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"scale": scale, "budget": budget, "rows": [asdict(r) for r in rows]},
                      indent=2)
    atomic_write(root / "compare.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    table = format_compare(rows, scale, budget)
    atomic_write(root / "compare.md", lambda tmp: tmp.write_text(table, encoding="utf-8"))
    fig, ax = plt.subplots(figsize=(6, 4))
    labels = any(r.knn_top1 is not None for r in rows)
    for r in rows:
        evals = [e for e in read_metrics(r.run_dir, missing_ok=True)
                 if e.get("kind") in ("eval", "knn")]
        for key, style, name in ((("knn_top1", "o-", r.method),) if labels else
                                 (("copy_top1", "o-", f"{r.method} copy top-1"),
                                  ("retrieval_i2t_r10", "s--", f"{r.method} i2t R@10"))):
            pts = [(e["epoch"], e[key]) for e in evals if key in e]
            if pts:
                ax.plot(*zip(*pts, strict=True), style, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("kNN top-1 (%)" if labels else "held-out figure (%)")
    ax.set_title(f"{'kNN accuracy' if labels else 'label-free figures'} per epoch "
                 f"({scale} scale)")
    ax.legend()
    fig.tight_layout()
    atomic_write(root / "compare.png", lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)

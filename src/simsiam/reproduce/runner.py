"""``simsiam reproduce``: run one of the paper's experiments as a grid, then tabulate and
plot our numbers beside the paper's.

Scales (the preset each row starts from):

- ``cpu``: ``configs/demo-cpu.yaml`` (ImageNet-stem ResNet-18 at 32 px, CIFAR heads, batch
  128, 10,000 CIFAR-10 training images) for ``Experiment.cpu_epochs`` epochs per row,
  kNN on 5,000 test images: about 10 minutes per experiment on 2 CPU cores. Only the
  qualitative results can show at this scale (see REPRODUCTION.md).
- ``cifar10``: ``configs/cifar10.yaml`` (the paper's Appendix D recipe, 800 epochs).
- ``imagenet``: ``configs/imagenet.yaml`` (section 3 recipe, 100 epochs); needs ``--data``.

Each row is a normal run directory under ``OUT/EXPERIMENT/<row>``. A row whose directory
already holds a finished run with the same config is reused, so an interrupted grid
continues where it stopped. A row that stops on a non-finite loss is reported as
"diverged" (the paper's "unstable"). Outputs: ``results.json``, ``table.md`` and
``EXPERIMENT.png`` (loss, collapse metric and kNN accuracy per epoch, one line per row).
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from simsiam.choices import SCALES
from simsiam.config import Config, config_differences, load_config
from simsiam.errors import ConfigError, ConfigNotice
from simsiam.fileio import atomic_write
from simsiam.reproduce.experiments import EXPERIMENTS, PAPER_EPOCHS, Experiment, Row
from simsiam.train.logger import knn_records, read_metrics

PRESETS = {"cpu": "demo-cpu", "cifar10": "cifar10", "imagenet": "imagenet"}
# The cpu scale's settings on top of the demo preset (runs of about 10 minutes on 2 cores).
CPU_OVERRIDES = {"data.per_class": 1000, "data.test_per_class": 500, "eval.knn_at_start": False,
        "eval.online_probe": False, "train.log_every": 5}


@dataclass
class RowResult:
    """What one row measured. Accuracies in percent; ``collapse_std`` is the mean over the
    last epoch's logged steps, ``collapse_ratio`` that divided by 1/sqrt(d); ``rank_ratio``
    the mean effective rank of z over the same steps divided by an isotropic batch's;
    ``guard_step`` the step at which the collapse guard fired (None: it did not)."""

    label: str
    paper: str
    run_dir: str
    epochs: int
    steps: int
    final_loss: float | None
    collapse_std: float | None
    collapse_ratio: float | None
    knn_top1: float | None
    linear_top1: float | None
    status: str  # "ok" | "diverged: ..." | "reused"
    rank_ratio: float | None = None
    guard_step: int | None = None


def slug(label: str) -> str:
    """A directory name for a row label: ``"(a) no predictor"`` -> ``"a-no-predictor"``."""
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def row_config(exp: Experiment, row: Row, scale: str, data: str, out: Path,
               extra: dict[str, Any] | None = None) -> Config:
    """The full config of one row: scale preset, then the row's overrides, then ``extra``.

    Raises:
        ConfigError: unknown scale, or a value the config rejects.
    """
    if scale not in SCALES:
        raise ConfigError(f"--scale {scale!r} is unknown: choose one of {SCALES}")
    base = load_config(PRESETS[scale], {"data.source": data})
    epochs = exp.cpu_epochs if scale == "cpu" else base.train.epochs
    over: dict[str, Any] = dict(CPU_OVERRIDES | exp.cpu_overrides) if scale == "cpu" else {}
    n_epochs = max(1, round(epochs * row.epochs_factor))
    over |= {"data.source": data, "train.out": str(out / slug(row.label)),
             "train.epochs": n_epochs,  # kNN after every epoch, or at the end only
             "eval.knn_every": 1 if exp.knn_every_epoch else n_epochs}
    if row.warmup_epochs is not None:  # the row's own warm-up (table3 (a)); at the cpu
        # scale the same fraction of the run, unless the preset's warm-up is longer already
        over["optim.warmup_epochs"] = (
            max(base.optim.warmup_epochs or 0.0, row.warmup_epochs * n_epochs / PAPER_EPOCHS)
            if scale == "cpu" else float(row.warmup_epochs))
    return load_config(PRESETS[scale], over | row.overrides | (extra or {}))


def _summarise(row: Row, cfg: Config, status: str, linear: float | None) -> RowResult:
    run = Path(cfg.train.out)
    recs = read_metrics(run, missing_ok=True)
    steps = [r for r in recs if r.get("kind") == "step"]
    epochs = [r for r in recs if r.get("kind") == "epoch"]
    knns = knn_records(recs)
    last_epoch = max((r["epoch"] for r in steps), default=None)
    tail = [r for r in steps if r["epoch"] == last_epoch]
    std = sum(r["collapse_std"] for r in tail) / len(tail) if tail else None
    healthy = tail[0]["collapse_healthy"] if tail else None
    ranked = [r for r in tail if "collapse_rank" in r]  # not logged by simsiam 0.1
    rank_ratio = (sum(r["collapse_rank"] / r["collapse_rank_healthy"] for r in ranked)
                  / len(ranked) if ranked else None)
    fired = [r["step"] for r in recs if r.get("kind") == "collapse"]
    return RowResult(row.label, row.paper, str(run), len(epochs),
                     steps[-1]["step"] if steps else 0,
                     epochs[-1]["loss"] if epochs else None, std,
                     std / healthy if std is not None and healthy else None,
                     knns[-1]["knn_top1"] if knns else None, linear, status,
                     rank_ratio=rank_ratio, guard_step=fired[0] if fired else None)


def finished_run(cfg: Config) -> bool:
    """Whether ``cfg``'s run directory holds a finished run of this config (every setting
    equal but other methods' sections; a run of simsiam 0.1 is read as today's)."""
    run = Path(cfg.train.out)
    if not (run / "backbone.safetensors").is_file() or not (run / "config.yaml").is_file():
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigNotice)  # a 0.1 file's note: not for here
        try:
            saved = load_config(run / "config.yaml")
        except ConfigError:
            return False
    return not config_differences(saved, cfg)


def linear_top1(cfg: Config, epochs: int) -> float:
    """Linear probe (BN + Linear on frozen features, the fast protocol) on the test split."""
    from simsiam.data.dataset import load_splits
    from simsiam.distributed.context import resolve_device
    from simsiam.eval.linear import linear_probe
    from simsiam.weights import load_backbone_for_eval

    backbone, info = load_backbone_for_eval(Path(cfg.train.out) / "backbone.safetensors")
    train, test = load_splits(cfg.data, cfg.train.seed, progress=False)
    device = resolve_device(cfg.train.device)
    res, _ = linear_probe(backbone.to(device), train.images, train.labels, test.images,
                          test.labels, len(train.classes), info["image_size"],
                          info["normalize"], device, epochs=epochs, seed=cfg.train.seed)
    return res.top1


def run_experiment(name: str, scale: str = "cpu", data: str = "", out: str | Path = "runs",
                   overwrite: bool = False, progress: bool = True, linear: bool = True,
                   linear_epochs: int | None = None,
                   extra: dict[str, Any] | None = None) -> list[RowResult]:
    """Run (or reuse) every row of experiment ``name`` and write its table and plot.

    Args:
        name: a key of :data:`EXPERIMENTS` (fig2, table1, table2, table3, similarity,
            symmetry, dim).
        scale: cpu | cifar10 | imagenet (see the module docstring).
        data: image folder or ``cifar10``.
        out: the experiment's rows go to ``out/name/<row>``.
        overwrite: replace row directories that hold a different or unfinished run.
        linear: also score each finished backbone with the linear probe
            (``linear_epochs``: 30 at the cpu scale, else 100).
        extra: overrides applied to every row last (e.g. ``{"train.device": "cpu"}``).

    Returns:
        One :class:`RowResult` per row run at this scale, in the experiment's order.

    Raises:
        ConfigError: unknown experiment or scale, a bad override, or a row directory that
            holds another run while ``overwrite`` is False.
    """
    from simsiam.train.trainer import pretrain

    if name not in EXPERIMENTS:
        raise ConfigError(f"experiment {name!r} is unknown: choose one of {tuple(EXPERIMENTS)}")
    exp = EXPERIMENTS[name]
    root = Path(out) / name
    rows = [r for r in exp.rows if r.cpu or scale != "cpu"]
    configs = [row_config(exp, r, scale, data, root, extra) for r in rows]  # all checked first
    lin_epochs = linear_epochs or (30 if scale == "cpu" else 100)
    results = []
    for row, cfg in zip(rows, configs, strict=True):
        status = "reused"
        if not finished_run(cfg):
            print(f"reproduce {name}: {row.label} -> {cfg.train.out}", flush=True)
            try:
                pretrain(cfg, overwrite=overwrite, progress=progress)
                status = "ok"
            except FloatingPointError as exc:  # the trainer's non-finite-loss stop
                status = f"diverged: {str(exc).splitlines()[0]}"
        lin = linear_top1(cfg, lin_epochs) if linear and not status.startswith("diverged") else None
        results.append(_summarise(row, cfg, status, lin))
        _write(exp, scale, root, results)  # after every row: partial tables survive a stop
    _plot(exp, root, results)
    return results


def fmt(v: float | None, spec: str) -> str:
    """``format(v, spec)``, or "-" for a value not measured."""
    return "-" if v is None else format(v, spec)


def format_table(exp: Experiment, scale: str, results: list[RowResult]) -> str:
    """A Markdown table: row, the paper's ImageNet linear top-1, our measurements."""
    f = fmt
    lines = [f"## {exp.title} ({exp.source}); scale {scale}", "",
             "| row | paper (ImageNet linear %) | kNN top-1 % | linear top-1 % | final loss "
             "| collapse std / (1/sqrt d) | effective rank / isotropic | guard fired at step "
             "| epochs | status |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.label} | {r.paper} | {f(r.knn_top1, '.2f')} | "
                     f"{f(r.linear_top1, '.2f')} | {f(r.final_loss, '.4f')} | "
                     f"{f(r.collapse_ratio, '.3f')} | {f(r.rank_ratio, '.3f')} | "
                     f"{f(r.guard_step, 'd')} | {r.epochs} | {r.status} |")
    return "\n".join(lines) + "\n"


def _write(exp: Experiment, scale: str, root: Path, results: list[RowResult]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"experiment": exp.name, "scale": scale,
                       "rows": [asdict(r) for r in results]}, indent=2)
    atomic_write(root / "results.json", lambda tmp: tmp.write_text(text))
    table = format_table(exp, scale, results)
    atomic_write(root / "table.md", lambda tmp: tmp.write_text(table))


def _plot(exp: Experiment, root: Path, results: list[RowResult]) -> Path:
    """Loss, collapse metric, effective rank and kNN accuracy per epoch for every row
    (Figure 2's panels and the rank)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(20, 4))
    for r in results:
        recs = read_metrics(r.run_dir, missing_ok=True)
        steps = [x for x in recs if x.get("kind") == "step"]
        spe = max((x["step"] for x in steps), default=1) / max(r.epochs, 1)
        x = [s["step"] / spe for s in steps]
        axes[0].plot(x, [s["loss"] for s in steps], label=r.label)
        axes[1].plot(x, [s["collapse_std"] for s in steps], label=r.label)
        ranked = [s for s in steps if "collapse_rank" in s]
        axes[2].plot([s["step"] / spe for s in ranked],
                     [s["collapse_rank"] / s["collapse_rank_healthy"] for s in ranked],
                     label=r.label)
        knn = knn_records(recs)
        axes[3].plot([k["epoch"] for k in knn], [k["knn_top1"] for k in knn], "o-",
                     label=r.label)
    if results:
        first = read_metrics(results[0].run_dir, missing_ok=True)
        healthy = next((s["collapse_healthy"] for s in first
                        if s.get("kind") == "step"), None)
        if healthy:
            axes[1].axhline(healthy, color="grey", ls="--", lw=1, label="1/sqrt(d)")
    axes[1].set_ylim(bottom=0.0)  # collapse means 0
    axes[2].axhline(1.0, color="grey", ls="--", lw=1, label="isotropic batch")
    axes[2].set_ylim(bottom=0.0)
    for ax, title in zip(axes, ("training loss", "collapse: std of l2-normalised z",
                                "effective rank of z / isotropic", "kNN top-1 (%)"),
                         strict=True):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    fig.suptitle(f"{exp.title}")
    fig.tight_layout()
    path = root / f"{exp.name}.png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return path

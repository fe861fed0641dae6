"""``simsiam report RUN``: PNG plots and a markdown summary of a run directory.

Plots (``RUN/report/``): loss per step with the epoch means; encoder and predictor lr;
the collapse metric against 1/sqrt(d) (paper Fig. 2, middle); kNN and online-probe top-1
per epoch; a 2-D t-SNE map (scikit-learn) of held-out backbone features coloured by
class. ``summary.md`` holds the final figures, the list of plots and the config.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from simsiam.errors import ConfigError  # noqa: E402
from simsiam.train.logger import read_metrics  # noqa: E402


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot(out: Path, name: str, title: str, xlabel: str, ylabel: str, series: list[tuple],
          hline: tuple | None = None, ylim: tuple | None = None,
          band: tuple | None = None) -> str:
    """One line chart: ``series`` of (x, y, style, label); ``hline`` (y, style, label);
    ``band`` (low, high, label), a shaded horizontal band."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    if band is not None:
        ax.axhspan(band[0], band[1], color="green", alpha=0.12, label=band[2])
    for x, y, style, label in series:
        ax.plot(x, y, style, lw=1.2, label=label)
    if hline is not None:
        ax.axhline(hline[0], color="grey" if hline[2] is None else "green", ls=hline[1],
                   lw=1, label=hline[2])
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend()
    _save(fig, out / name)
    return name


def _plot_rank(steps: list[dict], out: Path, rank_ratio: float) -> str:
    """Effective rank of z per logged step against an isotropic batch's, with the band
    from the rank guard's threshold up to that reference."""
    x = [r["step"] for r in steps]
    healthy = steps[0]["collapse_rank_healthy"]
    values = [r["collapse_rank"] for r in steps]
    return _plot(out, "rank.png", "Effective rank of z (RankMe; low = collapsed)", "step",
                 "effective rank", [(x, values, "-", "effective rank of z (batch)")],
                 hline=(healthy, "--", f"isotropic batch = {healthy:.1f}"),
                 ylim=(0, 1.1 * max(values + [healthy])),
                 band=(rank_ratio * healthy, healthy,
                       f"healthy band (guard threshold {rank_ratio:g} x isotropic and up)"))


def _plot_training(records: list[dict], out: Path, rank_ratio: float) -> list[str]:
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    evals = [r for r in records if r["kind"] == "knn"]
    x = [r["step"] for r in steps]
    made = [
        _plot(out, "loss.png", "Loss (range [-1, 1])", "step", "negative cosine loss",
              [(x, [r["loss"] for r in steps], "-", "loss (logged steps)"),
               ([r["step"] for r in epochs], [r["loss"] for r in epochs], "o-", "epoch mean")],
              hline=(-1, ":", None)),
        _plot(out, "lr.png", "Learning rate", "step", "learning rate",
              [(x, [r["lr"] for r in steps], "-", "encoder lr"),
               (x, [r["lr_predictor"] for r in steps], "--", "predictor lr")]),
    ]
    if steps:
        healthy = steps[0]["collapse_healthy"]
        values = [r["collapse_std"] for r in steps]
        made.append(_plot(out, "collapse.png", "Collapse metric (0 = collapsed)", "step",
                          "collapse metric", [(x, values, "-", "std of l2-normalised z")],
                          hline=(healthy, "--", f"1/sqrt(d) = {healthy:.4f}"),
                          ylim=(0, 1.2 * max(values + [healthy]))))
    if steps and "collapse_rank" in steps[0]:  # runs of simsiam 0.1 logged no rank
        made.append(_plot_rank(steps, out, rank_ratio))
    series = []
    if evals:
        series.append(([r["epoch"] for r in evals], [r["knn_top1"] for r in evals], "o-",
                       "kNN top-1 (held-out)"))
    probe = [r for r in evals if "online_probe_top1" in r]
    if probe:
        series.append(([r["epoch"] for r in probe], [r["online_probe_top1"] for r in probe],
                       "s-", "online probe top-1 (held-out)"))
    train_probe = [r for r in epochs if "online_probe_train_top1" in r]
    if train_probe:
        series.append(([r["epoch"] for r in train_probe],
                       [r["online_probe_train_top1"] for r in train_probe], "^:",
                       "online probe top-1 (training views)"))
    if series:
        made.append(_plot(out, "accuracy.png", "Accuracy per epoch", "epoch", "top-1 (%)",
                          series))
    return made


def _run_config(run: Path):
    """The run's config (a config.yaml of simsiam 0.1 is read as today's, quietly)."""
    import warnings

    from simsiam.config import load_config
    from simsiam.errors import ConfigNotice

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigNotice)
        return load_config(run / "config.yaml")


def _plot_embedding(run: Path, out: Path, points: int, seed: int) -> str | None:
    from sklearn.manifold import TSNE

    from simsiam.data import load_splits
    from simsiam.eval.knn import extract_features
    from simsiam.eval.loading import load_backbone_for_eval

    weights = run / "backbone.safetensors"
    if not weights.exists():
        weights = run / "checkpoints" / "last.pt"
    if not weights.exists():  # stopped before its first checkpoint: no map, the rest stays
        return None
    cfg = _run_config(run)
    backbone, info = load_backbone_for_eval(weights)
    _, test = load_splits(cfg.data, cfg.train.seed, progress=False)
    if test is None:
        return None
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(test), size=min(points, len(test)), replace=False))
    feats = extract_features(backbone, np.asarray(test.images[idx]), info["image_size"],
                             info["normalize"]).numpy()
    xy = TSNE(n_components=2, init="pca", random_state=seed, perplexity=30).fit_transform(feats)
    labels = test.labels[idx]
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    cmap = plt.get_cmap("tab10" if len(test.classes) <= 10 else "tab20")
    for c, name in enumerate(test.classes):
        m = labels == c
        ax.scatter(xy[m, 0], xy[m, 1], s=4, color=cmap(c % cmap.N), label=name or "images")
    ax.set(title=f"t-SNE of {len(idx)} held-out backbone features", xticks=[], yticks=[])
    ax.legend(markerscale=3, fontsize=7, loc="best")
    _save(fig, out / "embedding_tsne.png")
    return "embedding_tsne.png"


def write_report(run: str | Path, embedding_points: int = 2000) -> Path:
    """Write ``RUN/report/*.png`` and ``RUN/report/summary.md``; returns the summary path.

    Args:
        run: a run directory (needs config.yaml and metrics.jsonl).
        embedding_points: held-out images in the t-SNE map; 0 skips the map.

    Raises:
        ConfigError: ``run`` is not a run directory.
    """
    run = Path(run)
    if not (run / "metrics.jsonl").is_file() or not (run / "config.yaml").is_file():
        raise ConfigError(f"'{run}' is not a run directory (no metrics.jsonl and config.yaml)")
    out = run / "report"
    out.mkdir(exist_ok=True)
    records = read_metrics(run)
    rank_ratio = _run_config(run).eval.rank_ratio
    plots = _plot_training(records, out, rank_ratio)
    if embedding_points > 0:
        emb = _plot_embedding(run, out, embedding_points, seed=0)
        if emb:
            plots.append(emb)
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    evals = [r for r in records if r["kind"] == "knn"]
    alarms = [r for r in records if r["kind"] == "collapse"]
    rows = [("epochs", len(epochs)), ("steps", steps[-1]["step"] if steps else 0)]
    if epochs:
        rows.append(("final epoch mean loss", f"{epochs[-1]['loss']:.4f}"))
        rows.append(("training time", f"{sum(r['seconds'] for r in epochs) / 60:.1f} min"))
    if steps:
        rows.append(("final collapse metric", f"{steps[-1]['collapse_std']:.4f} "
                     f"(1/sqrt(d) = {steps[-1]['collapse_healthy']:.4f})"))
        if "collapse_rank" in steps[-1]:
            rows.append(("final effective rank of z", f"{steps[-1]['collapse_rank']:.1f} "
                         f"(isotropic batch: {steps[-1]['collapse_rank_healthy']:.1f})"))
    if evals:
        first, last = evals[0], evals[-1]
        rows.append(("kNN top-1", f"{last['knn_top1']:.2f}% at epoch {last['epoch']} "
                     f"(epoch {first['epoch']}: {first['knn_top1']:.2f}%; "
                     f"{last['queries']} held-out images)"))
        if "online_probe_top1" in last:
            rows.append(("online probe top-1", f"{last['online_probe_top1']:.2f}%"))
        if "feature_rank" in last:
            rows.append(("effective rank of the backbone features",
                         f"{last['feature_rank']:.1f} at epoch {last['epoch']} (isotropic: "
                         f"{last['feature_rank_healthy']:.1f})"))
    linear = run / "linear" / "linear.json"
    if linear.is_file():
        lin = json.loads(linear.read_text())
        rows.append(("linear probe", f"top-1 {lin['top1']:.2f}%, top-5 {lin['top5']:.2f}%"))
    rows.append(("collapse warnings", str(len(alarms)) if alarms else "none"))
    lines = [f"# Run report: {run.name}", "", "| measure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    lines += ["", "## Config", "", "```yaml", (run / "config.yaml").read_text().rstrip(), "```"]
    summary = out / "summary.md"
    summary.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return summary

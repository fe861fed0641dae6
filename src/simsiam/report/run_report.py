"""``simsiam report RUN``: PNG plots and a markdown summary of a run directory.

Plots (``RUN/report/``): loss per step with the epoch means; encoder and predictor lr;
the collapse metric against 1/sqrt(d) (paper Fig. 2, middle) and the effective rank of z;
with labels, kNN and online-probe top-1 per epoch; always the label-free signals per
evaluation (copy retrieval, alignment and uniformity, the features' effective rank); a
2-D t-SNE map (scikit-learn) of held-out backbone features drawn with thumbnails of the
images, and coloured by class with labels. ``summary.md`` holds the final figures
(each against epoch 0, the random init), the list of plots and the config.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from simsiam.errors import ConfigError, DataWarning  # noqa: E402
from simsiam.fileio import atomic_write  # noqa: E402
from simsiam.train.logger import eval_records, read_metrics  # noqa: E402


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
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
    evals = [r for r in eval_records(records) if "knn_top1" in r]
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
    return made + _plot_label_free(eval_records(records), out)


def _plot_label_free(evals: list[dict], out: Path) -> list[str]:
    """Copy retrieval, alignment and uniformity, and the features' effective rank per
    evaluation (:mod:`simsiam.eval.labelfree`; epoch 0 is the random init)."""
    made = []
    copy = [r for r in evals if "copy_top1" in r]
    if copy:
        e = [r["epoch"] for r in copy]
        made.append(_plot(out, "copy_retrieval.png", "Augmented-copy retrieval (held-out "
                          "images; higher = better)", "epoch", "found (%)",
                          [(e, [r["copy_top1"] for r in copy], "o-", "top-1"),
                           (e, [r["copy_top5"] for r in copy], "s--", "top-5")]))
        fig, ax = plt.subplots(figsize=(6, 3.6))
        ax.plot(e, [r["alignment"] for r in copy], "o-", label="alignment (lower = views closer)")
        ax.plot(e, [r["uniformity"] for r in copy], "s-",
                label="uniformity (lower = spread; 0 = collapsed)")
        ax.set(xlabel="epoch", title="Alignment and uniformity (Wang & Isola 2020)")
        ax.axhline(0, color="grey", lw=0.8)
        ax.legend()
        _save(fig, out / "alignment_uniformity.png")
        made.append("alignment_uniformity.png")
    retrieval = [r for r in evals if "retrieval_i2t_r10" in r]
    if retrieval:  # CLIP: text-image retrieval on the held-out images and their captions
        e = [r["epoch"] for r in retrieval]
        made.append(_plot(out, "retrieval.png", "Text-image retrieval, held-out images "
                          "(higher = better)", "epoch", "recall (%)",
                          [(e, [r[f"retrieval_{d}_r{k}"] for r in retrieval], style,
                            f"{d} R@{k}")
                           for d, marker in (("i2t", "o"), ("t2i", "s"))
                           for k, style in ((1, f"{marker}:"), (5, f"{marker}--"),
                                            (10, f"{marker}-"))]))
    ranked = [r for r in evals if "feature_rank" in r]
    if ranked:
        healthy = ranked[0]["feature_rank_healthy"]
        made.append(_plot(out, "feature_rank.png", "Effective rank of the held-out features",
                          "epoch", "effective rank",
                          [([r["epoch"] for r in ranked], [r["feature_rank"] for r in ranked],
                            "o-", "backbone features")],
                          hline=(healthy, "--", f"isotropic = {healthy:.1f}"),
                          ylim=(0, 1.1 * max([r["feature_rank"] for r in ranked] + [healthy]))))
    return made


def _run_config(run: Path):
    """The run's config (a config.yaml of simsiam 0.1 is read as today's, quietly)."""
    from simsiam.config import load_config
    from simsiam.errors import ConfigNotice

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigNotice)
        return load_config(run / "config.yaml")


def _plot_embedding(run: Path, out: Path, points: int, seed: int) -> list[str]:
    """A t-SNE map of held-out backbone features: drawn with the images' thumbnails
    (``embedding_thumbs.png``), and coloured by class when the data has labels
    (``embedding_tsne.png``)."""
    from sklearn.manifold import TSNE

    from simsiam.data import load_splits
    from simsiam.eval.knn import extract_features
    from simsiam.report.sheets import thumbnail_map
    from simsiam.weights import load_backbone_for_eval

    for old in ("embedding_thumbs.png", "embedding_tsne.png"):  # an earlier report's maps
        (out / old).unlink(missing_ok=True)
    weights = run / "backbone.safetensors"
    if not weights.exists():
        weights = run / "checkpoints" / "last.pt"
    if not weights.exists():  # stopped before its first checkpoint: no map, the rest stays
        return []
    cfg = _run_config(run)
    backbone, info = load_backbone_for_eval(weights)
    with warnings.catch_warnings():  # the run warned about its data when it trained
        warnings.simplefilter("ignore", DataWarning)
        _, test = load_splits(cfg.data, cfg.train.seed, progress=False)
    if test is None or len(test) < 3:
        return []
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(test), size=min(points, len(test)), replace=False))
    feats = extract_features(backbone, np.asarray(test.images[idx]), info["image_size"],
                             info["normalize"]).numpy()
    xy = TSNE(n_components=2, init="pca", random_state=seed,
              perplexity=min(30.0, len(idx) - 1.0)).fit_transform(feats)
    made = ["embedding_thumbs.png"]
    thumbnail_map(xy, np.asarray(test.images[idx]), out / made[0],
                  title=f"t-SNE of {len(idx)} held-out images (backbone features)")
    if not test.labelled:
        return made
    labels = test.labels[idx]
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    cmap = plt.get_cmap("tab10" if len(test.classes) <= 10 else "tab20")
    for c, name in enumerate(test.classes):
        m = labels == c
        ax.scatter(xy[m, 0], xy[m, 1], s=4, color=cmap(c % cmap.N), label=name)
    ax.set(title=f"t-SNE of {len(idx)} held-out backbone features", xticks=[], yticks=[])
    ax.legend(markerscale=3, fontsize=7, loc="best")
    _save(fig, out / "embedding_tsne.png")
    return made + ["embedding_tsne.png"]


def _eval_rows(evals: list[dict], start: str = "random init") -> list[tuple[str, str]]:
    """Summary rows of the monitor: the last evaluation against the first (epoch 0 is the
    random init); accuracies only for labelled data, the label-free figures always."""
    if not evals:
        return []
    first, last = evals[0], evals[-1]
    since = f"epoch {first['epoch']}" + (f" = {start}" if first["epoch"] == 0 else "")
    rows = []
    if "knn_top1" in last:
        rows.append(("kNN top-1", f"{last['knn_top1']:.2f}% at epoch {last['epoch']} "
                     f"({since}: {first['knn_top1']:.2f}%; {last['queries']} held-out images)"))
    elif last.get("labelled") is False:
        rows.append(("labels", "none (one class): no kNN or probe accuracy; the label-free "
                     "figures below say whether training helped"))
    if "online_probe_top1" in last:
        rows.append(("online probe top-1", f"{last['online_probe_top1']:.2f}%"))
    retrieval = [(f"retrieval_{d}_r{k}", f"retrieval {d} R@{k}", "{:.1f}%")
                 for d in ("i2t", "t2i") for k in (1, 5, 10)]
    for key, name, fmt in (*retrieval, ("copy_top1", "copy retrieval top-1", "{:.1f}%"),
                           ("copy_top5", "copy retrieval top-5", "{:.1f}%"),
                           ("alignment", "alignment (0-4; lower = views of one image closer, "
                            "read with uniformity: a collapsed encoder has 0)", "{:.3f}"),
                           ("uniformity", "uniformity (-4-0; lower = images spread, 0 = collapsed)",
                            "{:.3f}"),
                           ("feature_rank", "effective rank of the backbone features",
                            "{:.1f}")):
        if key in last:
            text = f"{fmt.format(last[key])} at epoch {last['epoch']}"
            if key in first and first is not last:
                text += f" ({since}: {fmt.format(first[key])})"
            rows.append((name, text))
    return rows


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
    cfg = _run_config(run)
    rank_ratio = cfg.eval.rank_ratio
    plots = _plot_training(records, out, rank_ratio)
    if embedding_points > 0:
        plots += _plot_embedding(run, out, embedding_points, seed=0)
    else:
        for old in ("embedding_thumbs.png", "embedding_tsne.png"):  # not part of this report
            (out / old).unlink(missing_ok=True)
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    evals = eval_records(records)
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
    from simsiam.eval.monitor import start_name

    rows += _eval_rows(evals, start_name(cfg))
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
    text = "\n".join(lines) + "\n"
    atomic_write(summary, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return summary

"""The paper's experiments as grids of config overrides, with the paper's numbers.

Source: SIMSIAM.md section 5 (ImageNet linear top-1, ResNet-50, 100 epochs, batch 512;
paper sections 4.1-4.6 and Appendix B). Each row is one pretraining run: the overrides
are applied on top of the scale's preset (see :mod:`simsiam.reproduce.runner`). The
paper's number is kept as text because some rows report "unstable".

Notes on rows:
- table1 "baseline" decays the predictor's lr with the encoder's (the paper's Table 1a
  baseline, 67.7); "lr not decayed" is the paper's final recipe (68.1) and our default.
- table3 rows switch BN at (projector hidden, projector output, predictor hidden,
  predictor output); "default" is on/on/on/off. Row (a), no BN anywhere, trains with a
  10-epoch warm-up (paper section 4.4: "10-epoch warmup [14] is used specifically for
  this entry"); at the cpu scale a tenth of the run, or the preset's warm-up where that
  is longer (the demo preset's 1 epoch of 3: every row there has a warm-up).
- symmetry "asymmetric 2x" doubles the number of steps (SIMSIAM.md: "asymmetric with
  2x steps"), i.e. twice the epochs of the other rows.
- table2 (batch size) keeps base_lr and scales lr = base_lr x batch / 256; batches of
  1024 and more get the 10-epoch warmup (``optim.warmup_epochs`` unset).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PAPER_EPOCHS = 100  # the length of the paper's ablation runs (SIMSIAM.md section 5)


@dataclass(frozen=True)
class Row:
    """One run of a grid: a label, config overrides and the paper's number (text)."""

    label: str
    overrides: dict[str, Any]
    paper: str
    epochs_factor: float = 1.0  # x the scale's epochs (2 for "asymmetric 2x")
    cpu: bool = True  # also run at the cpu scale (large batches are skipped there)
    # the paper's warm-up for this row, in epochs of its 100-epoch run (None: the preset's);
    # at the cpu scale the same fraction of the row's epochs, or the preset's if longer
    warmup_epochs: float | None = None


@dataclass(frozen=True)
class Experiment:
    """A named grid. ``cpu_epochs``: epochs per row at the cpu scale (about 10 minutes in
    all on 2 cores)."""

    name: str
    title: str
    source: str
    rows: tuple[Row, ...]
    cpu_epochs: int = 3
    knn_every_epoch: bool = False  # also monitor kNN after every epoch (curves)
    cpu_overrides: dict[str, Any] = field(default_factory=dict)


def _bn(ph: bool, po: bool, qh: bool, qo: bool) -> dict[str, bool]:
    return {"model.simsiam.proj_hidden_bn": ph, "model.simsiam.proj_out_bn": po,
            "model.simsiam.pred_hidden_bn": qh, "model.simsiam.pred_out_bn": qo}


EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (
    Experiment("fig2", "Stop-gradient (Figure 2)", "paper section 4.1, Figure 2", (
        Row("with stop-gradient", {}, "67.7 +- 0.1"),
        Row("without stop-gradient", {"model.simsiam.stop_gradient": False}, "0.1"),
    ), cpu_epochs=5, knn_every_epoch=True),
    Experiment("table1", "Predictor (Table 1)", "paper section 4.2, Table 1", (
        Row("baseline (pred. lr decayed)", {"model.simsiam.fix_pred_lr": False}, "67.7"),
        Row("(a) no predictor", {"model.simsiam.predictor": "none",
                                 "model.simsiam.fix_pred_lr": False}, "0.1"),
        Row("(b) fixed random predictor", {"model.simsiam.predictor": "fixed",
                                           "model.simsiam.fix_pred_lr": False}, "1.5"),
        Row("(c) pred. lr not decayed", {"model.simsiam.fix_pred_lr": True}, "68.1"),
    )),
    Experiment("table2", "Batch size (Table 2)", "paper section 4.3, Table 2", (
        Row("batch 64", {"train.batch_size": 64}, "66.1"),
        Row("batch 128", {"train.batch_size": 128}, "67.3"),
        Row("batch 256", {"train.batch_size": 256}, "68.1"),
        Row("batch 512", {"train.batch_size": 512}, "68.1"),
        Row("batch 1024", {"train.batch_size": 1024}, "68.0", cpu=False),
        Row("batch 2048", {"train.batch_size": 2048}, "67.9", cpu=False),
        Row("batch 4096", {"train.batch_size": 4096}, "64.0", cpu=False),
    ), cpu_epochs=3),
    Experiment("table3", "BatchNorm in the MLP heads (Table 3)", "paper section 4.4, Table 3", (
        Row("(a) none", _bn(False, False, False, False), "34.6", warmup_epochs=10),
        Row("(b) hidden only", _bn(True, False, True, False), "67.4"),
        Row("(c) default", _bn(True, True, True, False), "68.1"),
        Row("(d) all", _bn(True, True, True, True), "unstable"),
    )),
    Experiment("similarity", "Similarity function", "paper section 4.5", (
        Row("cosine", {}, "68.1"),
        Row("cross-entropy", {"model.simsiam.similarity": "cross_entropy"}, "63.2"),
    ), cpu_epochs=5),
    Experiment("symmetry", "Symmetrization", "paper section 4.6", (
        Row("symmetric", {}, "68.1"),
        Row("asymmetric", {"model.simsiam.symmetric": False}, "64.8"),
        Row("asymmetric 2x", {"model.simsiam.symmetric": False}, "67.3", epochs_factor=2.0),
    )),
    Experiment("dim", "Output dimension d (predictor hidden d/4)", "paper Appendix B", (
        Row("d = 256", {"model.simsiam.dim": 256, "model.simsiam.pred_hidden_dim": 64}, "65.3"),
        Row("d = 512", {"model.simsiam.dim": 512, "model.simsiam.pred_hidden_dim": 128}, "67.2"),
        Row("d = 1024", {"model.simsiam.dim": 1024, "model.simsiam.pred_hidden_dim": 256}, "67.5"),
        Row("d = 2048", {"model.simsiam.dim": 2048, "model.simsiam.pred_hidden_dim": 512}, "68.1"),
    )),
)}

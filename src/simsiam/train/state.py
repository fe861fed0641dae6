"""Where a run is: epoch, step, position in the epoch, the epoch's running sums, histories.

:class:`RunState` is everything about a run's progress that a checkpoint must keep besides
the weights, optimizer and RNG (those belong to :class:`simsiam.train.checkpoint.Checkpointer`).
Its ``state_dict`` holds plain values and CPU tensors only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from simsiam.distributed.ops import all_reduce_sum

# The label-free figures of an evaluation that a run keeps (simsiam.eval.monitor).
LABEL_FREE = ("copy_top1", "copy_top5", "alignment", "uniformity", "feature_rank")
# a method's own held-out figures kept beside them (CLIP's retrieval recall, percent)
METHOD_FIGURES = tuple(f"retrieval_{d}_r{k}" for d in ("i2t", "t2i") for k in (1, 5, 10))


class EpochSums:
    """The running sums of the epoch in progress, kept on the device (no host sync per step).

    Each process adds its own steps; :meth:`totals` combines the processes. A run resumed
    inside an epoch starts from the saved global totals ``partial``: every process
    continues the loss sum (an average over processes is taken at the end) and rank 0
    alone continues the probe hits (a sum), so the totals equal those of an uninterrupted
    epoch.

    Args:
        device: where the sums live.
        world_size: number of processes.
        is_main: this is rank 0.
        partial: ``{"seen", "loss_sum", "probe_hits"}`` saved mid-epoch, or None.
    """

    def __init__(self, device: torch.device, world_size: int = 1, is_main: bool = True,
                 partial: dict[str, Any] | None = None) -> None:
        self.world_size = world_size
        self.started = time.perf_counter()  # when this process (re)started the epoch
        self.base_seen = 0  # images of the epoch before a mid-epoch resume (all processes)
        self.seen = 0  # images this process trained on since (re)starting the epoch
        self.loss_sum = torch.zeros((), device=device)
        self.probe_hits = torch.zeros((), device=device)
        if partial is not None:
            self.base_seen = int(partial["seen"])
            self.loss_sum = partial["loss_sum"].to(device)
            if is_main:
                self.probe_hits = partial["probe_hits"].to(device)

    def add(self, loss: torch.Tensor, images: int, probe_hits: torch.Tensor | None) -> None:
        """One step of this process: its (detached) loss, batch size and probe hits."""
        self.seen += images
        self.loss_sum += loss
        if probe_hits is not None:
            self.probe_hits += probe_hits

    def totals(self) -> tuple[int, torch.Tensor, torch.Tensor]:
        """Global (images, loss sum over steps of the process-mean loss, probe hits) of the
        epoch so far. A collective under torchrun: every process must call it."""
        if self.world_size == 1:
            return self.base_seen + self.seen, self.loss_sum, self.probe_hits
        sums = all_reduce_sum(torch.stack([self.loss_sum.float(), self.probe_hits.float()]))
        return (self.base_seen + self.seen * self.world_size, sums[0] / self.world_size,
                sums[1])

    def snapshot(self) -> dict[str, Any]:
        """The totals as a checkpoint keeps them (``RunState.partial``: CPU tensors); a
        collective."""
        seen, loss_sum, hits = self.totals()
        return {"seen": seen, "loss_sum": loss_sum.cpu(), "probe_hits": hits.cpu()}


@dataclass
class RunState:
    """A run's progress.

    Attributes:
        epoch: epochs completed (the epoch in progress has this 0-based index).
        step: optimizer steps completed, all epochs (global steps under torchrun).
        batch_in_epoch: steps completed in the epoch in progress (0 at an epoch boundary).
        partial: the epoch's global sums when it was saved mid-epoch (see
            :class:`EpochSums`), else None.
        knn, probe_top1: kNN and online-probe top-1 (percent) by epoch (0: before training;
            labelled data only).
        evals: the label-free figures of each evaluation by epoch (``copy_top1``,
            ``copy_top5``, ``alignment``, ``uniformity``, ``feature_rank``, when measured).
        epoch_loss: mean loss of each completed epoch, by 1-based epoch.
        sums: the running sums of the epoch in progress (not part of ``state_dict``:
            a checkpoint taken inside an epoch keeps their global totals as ``partial``).
    """

    epoch: int = 0
    step: int = 0
    batch_in_epoch: int = 0
    partial: dict[str, Any] | None = None
    knn: dict[int, float] = field(default_factory=dict)
    probe_top1: dict[int, float] = field(default_factory=dict)
    epoch_loss: dict[int, float] = field(default_factory=dict)
    evals: dict[int, dict[str, float]] = field(default_factory=dict)
    sums: EpochSums | None = field(default=None, repr=False, compare=False)

    def state_dict(self) -> dict[str, Any]:
        """Plain values (dict keys as strings) and CPU tensors, the checkpoint's fields."""
        out: dict[str, Any] = {
            "epoch": self.epoch, "step": self.step, "batch_in_epoch": self.batch_in_epoch,
            "knn": {str(k): v for k, v in self.knn.items()},
            "epoch_loss": {str(k): v for k, v in self.epoch_loss.items()},
            "probe_top1": {str(k): v for k, v in self.probe_top1.items()},
            "evals": {str(k): dict(v) for k, v in self.evals.items()}}
        if self.batch_in_epoch and self.partial is not None:
            out["partial"] = self.partial
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` (fields absent from older checkpoints default)."""
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.batch_in_epoch = int(state.get("batch_in_epoch", 0))
        self.partial = state.get("partial")
        self.knn = {int(k): v for k, v in state.get("knn", {}).items()}
        self.epoch_loss = {int(k): v for k, v in state.get("epoch_loss", {}).items()}
        self.probe_top1 = {int(k): v for k, v in state.get("probe_top1", {}).items()}
        self.evals = {int(k): dict(v) for k, v in state.get("evals", {}).items()}

    def record_eval(self, epoch: int, record: dict[str, Any]) -> None:
        """Keep the figures of the evaluation after ``epoch`` epochs (an ``eval`` record)."""
        if "knn_top1" in record:
            self.knn[epoch] = record["knn_top1"]
        if "online_probe_top1" in record:
            self.probe_top1[epoch] = record["online_probe_top1"]
        self.evals[epoch] = {k: record[k] for k in LABEL_FREE + METHOD_FIGURES if k in record}


@dataclass
class RunResult:
    """What a finished run measured. kNN accuracies in percent; epoch 0 = before training."""

    run_dir: Path
    epochs: int
    steps: int
    knn: dict[int, float] = field(default_factory=dict)
    probe: dict[int, float] = field(default_factory=dict)  # online probe top-1 on held-out
    epoch_loss: dict[int, float] = field(default_factory=dict)
    test_images: int = 0
    backbone_path: Path | None = None
    evals: dict[int, dict[str, float]] = field(default_factory=dict)  # label-free figures
    labelled: bool = True  # the data has two classes or more (kNN and probe measured)

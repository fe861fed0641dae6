"""``simsiam bench``: where the time of a training step goes, on this machine.

Three rates, in images per second (one image = one pair of views = one sample of the
batch), each the median over timed windows after warm-up steps:

- ``data``: the input pipeline alone (decoded images -> two augmented views on the
  device), with nothing consuming the batches;
- ``model``: the training step alone (forward, loss, backward, optimizer step) on one
  batch already on the device, again and again;
- ``full``: both, as the trainer runs them.

Also the peak memory (CUDA: ``max_memory_allocated``; CPU: the process's peak resident
set) and, on CUDA, the model FLOPs per step counted by ``torch.utils.flop_counter`` and
the achieved fraction of the chip's peak dense bf16 FLOP/s (MFU) for known chips.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch

from simsiam.config import Config
from simsiam.data.loaders import input_pipeline, make_batches
from simsiam.data.types import ImageSet
from simsiam.distributed.context import resolve_device
from simsiam.methods import batch_options
from simsiam.optim.factory import build_optimizer
from simsiam.train.resources import peak_memory_mib
from simsiam.train.step import bf16_for_run, train_step
from simsiam.train.summary import run_view_kernels
from simsiam.weights import build_initial_method

__all__ = ["BenchResult", "EndlessBatches", "PEAK_BF16", "TIMING_LR", "TimedSteps",
           "format_table", "main_bench", "peak_flops", "run_bench"]

TIMING_LR = 0.01  # the lr of the timed steps (speed does not depend on it)

# Dense bf16 tensor-core peak, FLOP/s (vendor data sheets), matched on the device name.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12,
             "A10G": 70e12, "RTX 4090": 165e12, "RTX A6000": 155e12, "V100": 125e12}


@dataclass
class BenchResult:
    """Rates in images/s (median, min, max over windows), memory in MiB."""

    data: tuple[float, float, float]
    model: tuple[float, float, float]
    full: tuple[float, float, float]
    peak_mib: float
    flops_per_image: float | None = None
    mfu: float | None = None
    device_name: str = ""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rates(step, batch: int, device: torch.device, warmup: int, windows: int,
           steps_per_window: int) -> tuple[float, float, float]:
    for _ in range(warmup):
        step()
    _sync(device)
    rates = []
    for _ in range(windows):
        t0 = time.perf_counter()
        for _ in range(steps_per_window):
            step()
        _sync(device)
        rates.append(batch * steps_per_window / (time.perf_counter() - t0))
    return statistics.median(rates), min(rates), max(rates)


def peak_flops(device: torch.device) -> tuple[str, float | None]:
    """(device name, peak dense bf16 FLOP/s or None when unknown or not CUDA)."""
    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_BF16.items():
        if key in name:
            return name, value
    return name, None


class EndlessBatches:
    """A training loader's batches without end: a new epoch (shuffle) whenever one runs out."""

    def __init__(self, loader) -> None:
        self.loader, self.epoch = loader, 0
        self._it = iter(())

    def __next__(self):
        try:
            return next(self._it)
        except StopIteration:
            self.loader.sampler.set_epoch(self.epoch)
            self.epoch += 1
            self._it = iter(self.loader)
            return next(self._it)


@dataclass
class TimedSteps:
    """The three steps :func:`run_bench` times; each call handles one batch."""

    batches: EndlessBatches
    model: torch.nn.Module  # the method, compiled when train.compile
    optimizer: torch.optim.Optimizer
    fixed: object  # one batch already on the device (the model step's input)
    device: torch.device
    memory_format: torch.memory_format
    bf16: bool

    def data(self) -> None:
        """The input pipeline alone: the next batch's views on the device."""
        next(self.batches).to(self.device)

    def model_step(self) -> None:
        """The training step alone, on the same batch every time."""
        train_step(self.model, self.optimizer, self.fixed.inputs, self.bf16)

    def full(self) -> None:
        """Both, as the trainer runs them."""
        batch = next(self.batches).to(self.device, self.memory_format)
        train_step(self.model, self.optimizer, batch.inputs, self.bf16)


def run_bench(cfg: Config, train_images, warmup: int = 3, windows: int = 5,
              steps_per_window: int = 5,
              captions: list[list[str]] | None = None) -> BenchResult:
    """Measure the three rates for ``cfg`` on ``train_images`` (``(N, H, W, 3)`` uint8),
    with their ``captions`` for a method that learns from captions (CLIP; None: one
    made-up caption per image, "a photo of thing <i>.").

    The model and optimizer are built as the trainer builds them (the method's parameter
    groups, :func:`~simsiam.optim.factory.build_optimizer`), at the lr ``TIMING_LR``.

    Raises:
        ConfigError: the device asked for is not available.
    """
    device = resolve_device(cfg.train.device)
    bs = cfg.train.batch_size
    fmt = torch.channels_last if cfg.train.channels_last else torch.preserve_format
    torch.manual_seed(cfg.train.seed)
    model = build_initial_method(cfg.method, cfg.model, cfg.data.image_size).to(device).to(
        memory_format=fmt)
    if captions is None and model.batch_kind == "captions":
        captions = [[f"a photo of thing {i}."] for i in range(len(train_images))]
    data = ImageSet(train_images, np.zeros(len(train_images), dtype=np.int64), [""],
                    [""] * len(train_images), captions)
    # a small fixed lr: the model step repeats one batch, which a large lr could drive to
    # non-finite values (and those can run at another speed on a CPU)
    opt = build_optimizer(model.param_groups(), cfg.optim, TIMING_LR)
    batches = EndlessBatches(make_batches(model.batch_kind, data, cfg, device,
                                          **batch_options(cfg.method, cfg.model)))
    fixed = next(batches).to(device, fmt)
    steps = TimedSteps(batches, torch.compile(model) if cfg.train.compile else model, opt,
                       fixed, device, fmt, bf16_for_run(cfg, device))
    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    data_rate = _rates(steps.data, bs, device, warmup, windows, steps_per_window)
    model_rate = _rates(steps.model_step, bs, device, warmup, windows, steps_per_window)
    full_rate = _rates(steps.full, bs, device, warmup, windows, steps_per_window)
    name, peak = peak_flops(device)
    flops = mfu = None
    if device.type == "cuda":
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            train_step(model, opt, fixed.inputs, steps.bf16)
        flops = counter.get_total_flops() / bs
        if peak:
            mfu = flops * model_rate[0] / peak
    return BenchResult(data_rate, model_rate, full_rate, peak_memory_mib(device), flops, mfu,
                       name)


def format_table(cfg: Config, res: BenchResult) -> str:
    """The printed table (one row per rate, then memory and MFU)."""
    m = cfg.model
    head = (f"simsiam bench: {m.backbone} ({m.stem} stem), {cfg.data.image_size} px, batch "
            f"{cfg.train.batch_size}, augment {cfg.augment.backend}, amp {cfg.train.amp}, "
            f"channels_last {cfg.train.channels_last}, compile {cfg.train.compile}, view "
            f"kernels {run_view_kernels(cfg, str(resolve_device(cfg.train.device)))}, device "
            f"{res.device_name}, {torch.get_num_threads()} threads")
    rows = [("data pipeline alone", res.data), ("model step alone", res.model),
            ("full training step", res.full)]
    lines = [head, f"{'':24s}{'images/s':>10s}{'min':>10s}{'max':>10s}"]
    lines += [f"{name:24s}{r[0]:10.0f}{r[1]:10.0f}{r[2]:10.0f}" for name, r in rows]
    lines.append(f"peak memory {res.peak_mib:.0f} MiB")
    if res.flops_per_image is not None:
        mfu = f", MFU {100 * res.mfu:.1f}% of peak bf16" if res.mfu is not None else ""
        lines.append(f"model {res.flops_per_image / 1e9:.2f} GFLOP per image (fwd+bwd){mfu}")
    return "\n".join(lines)


def main_bench(cfg: Config, progress: bool = True, synthetic: int = 0, **kw) -> BenchResult:
    """Load the training images of ``cfg`` (or make ``synthetic`` random ones of the
    view size, for machines without the data), run :func:`run_bench`, print the table."""
    captions, pipeline = None, "cache (synthetic images in memory)"
    if synthetic:
        s = cfg.data.image_size
        images = np.random.default_rng(0).integers(0, 256, (synthetic, s, s, 3), dtype=np.uint8)
    else:
        from simsiam.data.dataset import load_data

        splits = load_data(cfg.data, cfg.train.seed, progress,
                           input_pipeline(cfg, resolve_device(cfg.train.device)))
        images, captions, pipeline = splits.train.images, splits.train.captions, splits.pipeline
    res = run_bench(cfg, images, captions=captions, **kw)
    workers = f", {cfg.data.num_workers} workers" if pipeline != "cache" else ""
    print(format_table(cfg, res) + f"\ninput: data.pipeline {pipeline}{workers}", flush=True)
    return res

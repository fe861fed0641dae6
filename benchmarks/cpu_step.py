"""Image pairs per second of one SimSiam training step on this machine.

Two measurements behind the demo's recipe (README, "Why this recipe"):

  python benchmarks/cpu_step.py model      # model step alone on synthetic tensors
  python benchmarks/cpu_step.py pipeline   # the demo preset's full step on real images

Not run by the test suite. Prints one line per setting.
"""

from __future__ import annotations

import argparse
import time

import torch

from simsiam.config import ModelConfig, OptimConfig, load_config
from simsiam.data import load_splits, make_batches
from simsiam.methods import SimSiamConfig, build_method
from simsiam.train import build_optimizer, train_step

CIFAR_HEADS = SimSiamConfig(proj_layers=2, proj_hidden_dim=2048, dim=2048, pred_hidden_dim=512)
# lr 0.01, momentum 0.9 and no weight decay: the timing's optimizer (speed only)
TIMING_OPTIM = OptimConfig(base_lr=0.01, momentum=0.9, weight_decay=0.0)


def step_rate(model, x1, x2, bf16: bool, steps: int = 4, warmup: int = 2) -> float:
    opt = build_optimizer(model.param_groups(), TIMING_OPTIM, TIMING_OPTIM.base_lr)
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        train_step(model, opt, [x1, x2], bf16)
    return x1.shape[0] * steps / (time.perf_counter() - t0)


def bench_model(batch: int = 128) -> None:
    for stem, bf16, cl in [("cifar", False, False), ("cifar", True, True),
                           ("imagenet", False, False), ("imagenet", True, False),
                           ("imagenet", True, True)]:
        torch.manual_seed(0)
        fmt = torch.channels_last if cl else torch.contiguous_format
        model = build_method("simsiam", ModelConfig(backbone="resnet18", stem=stem,
                                                    simsiam=CIFAR_HEADS)).to(memory_format=fmt)
        x1, x2 = (torch.randn(batch, 3, 32, 32).contiguous(memory_format=fmt) for _ in range(2))
        rate = step_rate(model, x1, x2, bf16)
        print(f"model step  resnet18 {stem:8s} stem 32px batch {batch} "
              f"{'bf16' if bf16 else 'fp32'}{' channels_last' if cl else ''}: {rate:.0f} pairs/s",
              flush=True)


def bench_pipeline(data: str = "../shared/data/cifar10-jpeg") -> None:
    for workers in (0, 1, 2):
        cfg = load_config("demo-cpu", {"data.source": data, "data.num_workers": workers,
                                       "augment.backend": "per_image"})
        train, _ = load_splits(cfg.data)
        model = build_method("simsiam", cfg.model).to(memory_format=torch.channels_last)
        loader = make_batches(model.batch_kind, train, cfg, torch.device("cpu"))
        loader.sampler.set_epoch(0)
        opt = build_optimizer(model.param_groups(), TIMING_OPTIM, TIMING_OPTIM.base_lr)
        n = 0
        for i, batch in enumerate(loader):
            if i == 3:
                t0, n = time.perf_counter(), 0
            batch = batch.to(torch.device("cpu"), torch.channels_last)
            train_step(model, opt, batch.inputs, bf16=True)
            n += len(batch)
            if i == 23:
                break
        print(f"full step   demo preset, per-image augmentation, num_workers={workers}: "
              f"{n / (time.perf_counter() - t0):.0f} pairs/s", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", nargs="?", choices=("model", "pipeline"), default="model",
                   help="model: the model step alone on synthetic tensors (default); "
                   "pipeline: the demo preset's full step with per-image augmentation")
    p.add_argument("--data", default="../shared/data/cifar10-jpeg",
                   help="pipeline: the CIFAR-10 folder")
    args = p.parse_args(argv)
    if args.what == "model":
        bench_model()
    else:
        bench_pipeline(args.data)


if __name__ == "__main__":
    main()

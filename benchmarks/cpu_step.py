"""Image pairs per second of one SimSiam training step on this machine.

Two measurements behind the demo's recipe (README, "Why this recipe"):

  python benchmarks/cpu_step.py model      # model step alone on synthetic tensors
  python benchmarks/cpu_step.py pipeline   # the demo preset's full step on real images

Not run by the test suite. Prints one line per setting.
"""

from __future__ import annotations

import sys
import time

import torch

from simsiam.config import ModelConfig, load_config
from simsiam.methods import build_method
from simsiam.train.trainer import train_step

CIFAR_HEADS = dict(proj_layers=2, proj_hidden_dim=2048, dim=2048, pred_hidden_dim=512)


def step_rate(model, x1, x2, bf16: bool, steps: int = 4, warmup: int = 2) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
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
                                                    **CIFAR_HEADS)).to(memory_format=fmt)
        x1, x2 = (torch.randn(batch, 3, 32, 32).contiguous(memory_format=fmt) for _ in range(2))
        rate = step_rate(model, x1, x2, bf16)
        print(f"model step  resnet18 {stem:8s} stem 32px batch {batch} "
              f"{'bf16' if bf16 else 'fp32'}{' channels_last' if cl else ''}: {rate:.0f} pairs/s",
              flush=True)


def bench_pipeline(data: str = "../shared/data/cifar10-jpeg") -> None:
    from simsiam.data import load_splits
    from simsiam.train.trainer import make_loader

    for workers in (0, 1, 2):
        cfg = load_config("demo-cpu", {"data.source": data, "data.num_workers": workers})
        train, _ = load_splits(cfg.data)
        loader = make_loader(train, cfg, torch.device("cpu"))
        model = build_method("simsiam", cfg.model).to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        n = 0
        for i, (x1, x2, _) in enumerate(loader):
            if i == 3:
                t0, n = time.perf_counter(), 0
            x1 = x1.contiguous(memory_format=torch.channels_last)
            x2 = x2.contiguous(memory_format=torch.channels_last)
            train_step(model, opt, [x1, x2], bf16=True)
            n += x1.shape[0]
            if i == 23:
                break
        print(f"full step   demo preset, per-image augmentation, num_workers={workers}: "
              f"{n / (time.perf_counter() - t0):.0f} pairs/s", flush=True)


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "model"
    bench_model() if what == "model" else bench_pipeline()

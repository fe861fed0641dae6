"""The input pipeline alone: our batched views vs torchvision's per-image PIL pipeline.

    python benchmarks/pipeline_vs_pil.py [--data DIR] [--batch 128] [--batches 20]

Produces two views of each image of a batch with the SimSiam CIFAR recipe
(RandomResizedCrop(32, scale=(0.2, 1)), ColorJitter(0.4, 0.4, 0.4, 0.1) p=0.8,
grayscale p=0.2, flip p=0.5, ToTensor, Normalize; no blur at 32 px) and nothing
consumes them. Rows:

- ``torchvision PIL, ImageFolder, workers=W``: what the official code, lightly and
  solo-learn do: decode each JPEG, then torchvision.transforms on PIL images, in a
  DataLoader with W worker processes (W = 0, 1, 2);
- ``torchvision PIL, decoded in memory, workers=W``: the same transforms on images
  already decoded (PIL images from our uint8 cache), to separate decoding from
  augmentation;
- ``simsiam batched``: our decoded cache held in memory and
  :class:`~simsiam.augment.batched.BatchedSimSiamAugment` on whole batches
  (:class:`~simsiam.data.device_loader.BatchedViewLoader`), in the main process; and the
  same with ``augment.compile`` (jitter kernels fused by torch.compile; the one-off
  compilation is not timed).

Reports images per second (one image = two views), the median of three passes, and the
ratio to the best torchvision row. Uses torch's default thread count (2 on the 2-core
machine). Not run by the tests.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets
from torchvision import transforms as T

from simsiam.augment import CIFAR10_MEAN, CIFAR10_STD, BatchedSimSiamAugment
from simsiam.config import AugmentConfig, DataConfig
from simsiam.data import BatchedViewLoader, load_splits


def pil_recipe(size: int = 32) -> T.Compose:
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.2, 1.0)),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(CIFAR10_MEAN, CIFAR10_STD),
    ])


class TwoViews:
    def __init__(self, t):
        self.t = t

    def __call__(self, img):
        return self.t(img), self.t(img)


class DecodedPIL(Dataset):
    def __init__(self, images: np.ndarray, transform) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(np.asarray(self.images[i]))), 0


def rate_of(batches, batch: int, n: int) -> float:
    it = iter(batches)
    next(it)  # warm-up: worker start, first batch
    t0 = time.perf_counter()
    for _ in range(n):
        next(it)
    return batch * n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/cifar10-jpeg")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--passes", type=int, default=3)
    args = ap.parse_args(argv)
    n, bs = args.batches, args.batch
    train, _ = load_splits(DataConfig(source=args.data, image_size=32, per_class=1000),
                           progress=False)
    rows: dict[str, float] = {}

    def measure(name: str, make) -> None:
        rates = [rate_of(make(), bs, n) for _ in range(args.passes)]
        rows[name] = statistics.median(rates)
        print(f"{name:48s} {rows[name]:8.0f} images/s  (passes: "
              f"{', '.join(f'{r:.0f}' for r in rates)})", flush=True)

    folder = datasets.ImageFolder(f"{args.data}/train", transform=TwoViews(pil_recipe()))
    decoded = DecodedPIL(train.images, TwoViews(pil_recipe()))
    for w in (0, 1, 2):
        measure(f"torchvision PIL, ImageFolder, workers={w}", lambda w=w: DataLoader(
            folder, batch_size=bs, shuffle=True, num_workers=w, drop_last=True))
    for w in (0, 1, 2):
        measure(f"torchvision PIL, decoded in memory, workers={w}", lambda w=w: DataLoader(
            decoded, batch_size=bs, shuffle=True, num_workers=w, drop_last=True))

    def ours(compile: bool = False):
        aug = BatchedSimSiamAugment(AugmentConfig(), 32, compile=compile)
        loader = BatchedViewLoader(train.images, aug, bs, seed=0, device=torch.device("cpu"))
        loader.sampler.set_epoch(0)
        return loader

    measure("simsiam batched (cache in memory, main process)", ours)
    warm = ours(compile=True)  # compile once (not timed), then time fresh loaders
    for _ in range(3):
        next(iter(warm))
    compiled = BatchedSimSiamAugment(AugmentConfig(), 32, compile=True)
    compiled.ops = warm.augment.ops

    def ours_compiled():
        loader = BatchedViewLoader(train.images, compiled, bs, seed=0,
                                   device=torch.device("cpu"))
        loader.sampler.set_epoch(0)
        return loader

    measure("simsiam batched, augment.compile", ours_compiled)
    for ref in ("torchvision PIL, ImageFolder", "torchvision PIL, decoded in memory"):
        name = max((k for k in rows if k.startswith(ref)), key=rows.get)
        for ours_row in ("simsiam batched (cache in memory, main process)",
                         "simsiam batched, augment.compile"):
            print(f"ratio {ours_row} / {name}: {rows[ours_row] / rows[name]:.1f}x")
    print(f"({torch.get_num_threads()} torch threads)")


if __name__ == "__main__":
    main()

"""The stream input path vs torchvision's ImageFolder + the official transforms, on photos.

    mkdir -p /tmp/flickr-cls && ln -sfn "$PWD/../shared/data/flickr8k-1k/images" \
        /tmp/flickr-cls/photos
    python benchmarks/stream_vs_torchvision.py --data /tmp/flickr-cls [--size 224] [--workers 2] \
        [--threads 1]

Both pipelines make the two SimSiam ImageNet views (RandomResizedCrop(224, scale=(0.2, 1)),
ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8, grayscale p 0.2, Gaussian blur sigma 0.1-2 p 0.5,
flip, normalisation) of every photo of a class folder, and nothing consumes them:

- ``torchvision``: ``datasets.ImageFolder`` with the official SimSiam transforms (PIL,
  the blur as PIL's ``ImageFilter.GaussianBlur``) applied twice per image, in a DataLoader
  with ``--workers`` processes;
- ``simsiam stream``: :class:`simsiam.data.StreamViewLoader` with the same workers (decode,
  crop boxes from the whole image, crop + resize to uint8), the rest of the recipe batched
  in the main process (here the CPU): by default (``augment.compile`` auto) as compiled
  kernels over cache-sized chunks (``simsiam.augment.fused``), and with the eager kernels
  (``augment.compile: false``).

Rounds alternate the pipelines; each round starts a fresh loader, times ``--batches``
batches after two untimed ones (worker start-up excluded) and stops its workers (so the
batches they had queued ahead are not made during the next pipeline's round). Reports
pairs/s (median over rounds) and the per-stage costs measured in this process on one
thread: read the file, decode, the two crops, the batched device operations (eager and
compiled), and torchvision's per-pair transforms.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
from functools import partial
from pathlib import Path

import torch
from PIL import Image, ImageFilter
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision import transforms as T

from simsiam.augment import IMAGENET_MEAN, IMAGENET_STD, BatchedViewAugment
from simsiam.compile_cache import use_compile_cache
from simsiam.config import AugmentConfig, DataConfig
from simsiam.data import StreamViewLoader, draw_boxes, load_data, stream_crops


class PilBlur:
    """The official SimSiam blur: PIL's GaussianBlur with a radius uniform in sigma."""

    def __init__(self, sigma: tuple[float, float]) -> None:
        self.sigma = sigma

    def __call__(self, img: Image.Image) -> Image.Image:
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))


class TwoCrops:
    """Two views of one decoded image (the official TwoCropsTransform)."""

    def __init__(self, transform) -> None:
        self.transform = transform

    def __call__(self, img):
        return [self.transform(img), self.transform(img)]


def official_transform(size: int) -> T.Compose:
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.2, 1.0)),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.RandomApply([PilBlur((0.1, 2.0))], p=0.5),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)


def _rate(make_loader, batches: int, batch: int) -> float:
    """Pairs/s of a fresh loader over ``batches`` batches after two untimed ones (worker
    start-up); its workers are stopped before returning, so that the work they had queued
    ahead does not run during the next pipeline's round."""
    loader = make_loader()
    it = iter(loader)
    for _ in range(2):
        next(it)  # workers started and warm
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    rate = batches * batch / (time.perf_counter() - t0)
    del it, loader
    gc.collect()
    return rate


def _stages(paths: list, size: int, n: int = 48) -> dict[str, float]:
    """Milliseconds per pair of each stage, on this process's one thread."""
    files = [Path(p) for p in paths[:n]]
    aug = BatchedViewAugment(AugmentConfig(recipe="simsiam"), size, compile=False)
    fused = BatchedViewAugment(AugmentConfig(recipe="simsiam"), size, compile=None)  # auto
    specs = aug.crop_specs()
    g = torch.Generator().manual_seed(0)
    out: dict[str, float] = {}
    t = time.perf_counter()
    blobs = [f.read_bytes() for f in files]
    out["read file"] = (time.perf_counter() - t) / n
    t = time.perf_counter()
    for f in files:
        with Image.open(f) as im:
            im.convert("RGB")
    out["decode"] = (time.perf_counter() - t) / n
    t = time.perf_counter()
    crops = [stream_crops(f, specs, g) for f in files]
    out["decode + 2 crops (worker)"] = (time.perf_counter() - t) / n
    out["2 crops (worker)"] = out["decode + 2 crops (worker)"] - out["decode"]
    draw_boxes(400, 300, specs, g)
    x = [torch.stack([torch.from_numpy(c[v]).permute(2, 0, 1) for c in crops]) for v in (0, 1)]
    for name, a in (("device ops, 2 views, eager", aug),
                    ("device ops, 2 views, compiled", fused)):
        a.views_from_crops(x, g)
        t = time.perf_counter()
        a.views_from_crops(x, g)
        out[name] = (time.perf_counter() - t) / n
    tv = TwoCrops(official_transform(size))
    t = time.perf_counter()
    for f in files:
        with Image.open(f) as im:
            tv(im.convert("RGB"))
    out["torchvision decode + 2 views"] = (time.perf_counter() - t) / n
    del blobs
    return {k: v * 1e3 for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a class folder of photos (outside the repo)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=13,
                    help="timed batches per round (13 x 64 + 2 untimed: one epoch of 1,000 "
                         "photos; short rounds time the workers filling their queues)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of this (the main) process, where the stream path's "
                         "device operations run; the workers take one each")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.data)
    use_compile_cache()  # as the CLI: a second run starts with the kernels compiled

    tv_set = datasets.ImageFolder(str(root), transform=TwoCrops(official_transform(args.size)))
    splits = load_data(DataConfig(source=str(root), image_size=args.size, holdout_fraction=0.0),
                       pipeline="stream", progress=False)
    files = splits.train.images
    augs = {name: BatchedViewAugment(AugmentConfig(recipe="simsiam"), args.size,
                                     compile=compile_)
            for name, compile_ in (("stream", None), ("stream eager", False))}  # None: default

    def torchvision_loader() -> DataLoader:
        return DataLoader(tv_set, batch_size=args.batch, shuffle=True, drop_last=True,
                          num_workers=args.workers,
                          worker_init_fn=_one_thread if args.workers else None)

    def stream_loader(name: str, epoch: int) -> StreamViewLoader:
        loader = StreamViewLoader(files.sources, files.names, augs[name], args.batch, 0,
                                  torch.device("cpu"), num_workers=args.workers)
        loader.sampler.set_epoch(epoch)
        return loader

    _rate(partial(stream_loader, "stream", 0), 1, args.batch)  # compile (not timed)
    rates: dict[str, list[float]] = {"torchvision": [], "stream": [], "stream eager": []}
    for r in range(args.rounds):
        rates["torchvision"].append(_rate(torchvision_loader, args.batches, args.batch))
        for name in augs:
            rates[name].append(_rate(partial(stream_loader, name, r + 1), args.batches,
                                     args.batch))
    base = statistics.median(rates["torchvision"])
    print(f"{len(tv_set)} photos in '{root}', {args.size} px, batch {args.batch}, "
          f"{args.workers} workers, torch threads {torch.get_num_threads()}")
    for name, vals in rates.items():
        med = statistics.median(vals)
        print(f"  {name:<16} {med:7.1f} pairs/s (rounds: "
              f"{', '.join(f'{v:.1f}' for v in vals)})  {med / base:.2f}x")
    print("per-stage cost, ms per pair on one thread:")
    torch.set_num_threads(1)
    for name, ms in _stages(splits.train.paths, args.size).items():
        print(f"  {name:<30} {ms:6.2f}", flush=True)


if __name__ == "__main__":
    main()

"""The NVIDIA DALI input path (``data.pipeline: dali``): the stream path's crops, decoded and
cut by DALI, on the GPU when there is one.

Optional: ``pip install -e '.[dali]'`` (``nvidia-dali-cuda130``, for the CUDA 13 build of
torch this project pins); never part of ``make demo`` / ``make test``. Each batch is the
one :class:`~simsiam.data.stream.StreamViewLoader` would make, in the same order
(:class:`~simsiam.data.dataset.EpochShuffleSampler`: shuffle, ``torchrun`` slices, resume
inside an epoch) with the same boxes (:func:`~simsiam.data.stream.draw_boxes` from each
image's header and (seed, epoch, index), torchvision's rule on the whole image): this
process reads the files' bytes and headers; DALI decodes each image once (``mixed``: nvJPEG
on the GPU; ``cpu`` without one), cuts every view's box (``fn.slice``) and resizes it with
an antialiased linear filter (``fn.resize``) to uint8; the view recipe's other operations
then run batched on the device as on every path
(:meth:`~simsiam.augment.batched.BatchedViewAugment.views_from_crops`). A batch DALI
cannot decode is made again by the stream path's PIL decoder, which names and replaces
the damaged file (:class:`~simsiam.data.stream.StreamViews`).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from simsiam.data.decode import ImageSource, open_image, oriented_size
from simsiam.data.device_loader import batch_seed
from simsiam.data.sampling import EpochShuffleSampler, view_seed
from simsiam.data.stream import BadFiles, StreamViews, draw_boxes
from simsiam.errors import ConfigError


def dali_available() -> bool:
    """Whether NVIDIA DALI (``nvidia.dali``) can be imported."""
    try:
        return importlib.util.find_spec("nvidia.dali") is not None
    except ModuleNotFoundError:
        return False


def dali_or_why(device: torch.device) -> str | None:
    """None when the DALI path can run here (DALI installed and ``device`` is CUDA), else
    why not (for the notice that the stream path runs instead)."""
    if device.type != "cuda":
        return f"the training device is {device.type}, not a GPU"
    if not dali_available():
        return "NVIDIA DALI is not installed (pip install -e '.[dali]')"
    return None


def _pipeline(batch: int, sizes: Sequence[int], threads: int, device: torch.device,
              seed: int):
    """A DALI pipeline: encoded bytes and one (anchor, shape) pair per view in; one
    ``(B, s, s, 3)`` uint8 crop per view out."""
    from nvidia.dali import fn, pipeline_def, types

    gpu = device.type == "cuda"

    @pipeline_def(batch_size=batch, num_threads=max(1, threads), seed=seed & 0x7FFFFFFF,
                  device_id=(device.index or 0) if gpu else None, exec_dynamic=True,
                  prefetch_queue_depth=1)
    def views():
        data = fn.external_source(name="data", dtype=types.UINT8, ndim=1)
        img = fn.decoders.image(data, device="mixed" if gpu else "cpu",
                                output_type=types.RGB)
        out = []
        for v, size in enumerate(sizes):
            anchor = fn.external_source(name=f"anchor{v}", dtype=types.FLOAT, ndim=1)
            shape = fn.external_source(name=f"shape{v}", dtype=types.FLOAT, ndim=1)
            crop = fn.slice(img, anchor, shape, axes=[0, 1], normalized_anchor=False,
                            normalized_shape=False)
            out.append(fn.resize(crop, resize_x=size, resize_y=size,
                                 interp_type=types.INTERP_LINEAR, antialias=True))
        return tuple(out)

    pipe = views()
    pipe.build()
    return pipe


class DaliViewLoader:
    """Iterates ``(x1, x2, ..., index)`` as :class:`~simsiam.data.stream.StreamViewLoader`
    does, the crops decoded and cut by NVIDIA DALI (see the module docstring).

    Args:
        sources, names: the image files (paths; shards are read by the stream path).
        augment: the batched recipe (``crop_specs()``, ``views_from_crops``).
        batch_size: images per batch on this process.
        seed: the run's seed.
        device: CUDA (``mixed`` decoding) or the CPU (DALI's CPU operators; for tests).
        threads: DALI's CPU threads.
        rank, world_size: data parallelism (:class:`EpochShuffleSampler`).

    Raises:
        ConfigError: DALI is not installed, or a source is not a file path.
    """

    def __init__(self, sources: Sequence[ImageSource], names: Sequence[str], augment,
                 batch_size: int, seed: int, device: torch.device, threads: int = 2,
                 rank: int = 0, world_size: int = 1, strict: bool = False) -> None:
        if not dali_available():
            raise ConfigError("data.pipeline dali needs NVIDIA DALI: pip install -e '.[dali]' "
                              "(or use data.pipeline stream)")
        if not all(isinstance(s, (str, Path)) for s in sources):
            raise ConfigError("data.pipeline dali reads image files; WebDataset shards are "
                              "streamed by data.pipeline stream")
        self.sources, self.names, self.augment = list(sources), list(names), augment
        self.batch_size, self.seed, self.device = batch_size, seed, device
        self.bad = BadFiles(strict)
        self.specs = augment.crop_specs()
        self.sampler = EpochShuffleSampler(len(sources), seed, batch_size * world_size, rank,
                                           world_size)
        self.rank = rank if world_size > 1 else None
        self.pipe = _pipeline(batch_size, [s.size for s in self.specs], threads, device, seed)
        self.fallback = StreamViews(self.sources, self.names, self.specs, seed, draft=False)

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size

    def _boxes(self, epoch: int, i: int, data: bytes) -> list[tuple[int, int, int, int]]:
        with open_image(lambda: data) as im:
            width, height = oriented_size(im)
        g = torch.Generator().manual_seed(view_seed(self.seed, epoch, i))
        return draw_boxes(width, height, self.specs, g)

    def _dali_batch(self, epoch: int, idx: list[int]) -> list[torch.Tensor]:
        blobs = [Path(self.sources[i]).read_bytes() for i in idx]
        boxes = [self._boxes(epoch, i, b) for i, b in zip(idx, blobs, strict=True)]
        self.pipe.feed_input("data", [np.frombuffer(b, dtype=np.uint8) for b in blobs])
        for v in range(len(self.specs)):
            self.pipe.feed_input(f"anchor{v}", [np.array(bx[v][:2], dtype=np.float32)
                                                for bx in boxes])
            self.pipe.feed_input(f"shape{v}", [np.array(bx[v][2:], dtype=np.float32)
                                               for bx in boxes])
        outs = self.pipe.run()
        crops = []
        for out in outs:
            t = out.as_tensor()
            x = torch.from_dlpack(t) if self.device.type == "cuda" else torch.from_numpy(
                np.array(t))
            crops.append(x.permute(0, 3, 1, 2).contiguous().to(self.device))
        return crops

    def _pil_batch(self, epoch: int, idx: list[int]) -> tuple[list[torch.Tensor], list[int]]:
        """The batch by the stream path's decoder: damaged files replaced and named."""
        items = [self.fallback[(epoch, i)] for i in idx]
        self.bad.report([b for it in items for b in it[2]])
        crops = [torch.stack([it[0][v] for it in items]).to(self.device)
                 for v in range(len(self.specs))]
        return crops, [it[1] for it in items]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        epoch, start, bs = self.sampler.epoch, self.sampler.start, self.batch_size
        order = [i for _, i in self.sampler]
        first = start // (bs * self.sampler.world_size)
        for b in range(len(order) // bs):
            idx = order[b * bs:(b + 1) * bs]
            try:
                crops = self._dali_batch(epoch, idx)
            except (RuntimeError, OSError, ValueError):  # a file DALI or PIL cannot read
                crops, idx = self._pil_batch(epoch, idx)
            g = torch.Generator(self.device).manual_seed(
                batch_seed(self.seed, epoch, first + b, self.rank))
            yield (*self.augment.views_from_crops(crops, g),
                   torch.tensor(idx, dtype=torch.int64))

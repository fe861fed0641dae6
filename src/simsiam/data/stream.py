"""The stream input path: every image decoded from its file each epoch, crops of the whole image.

The paper (and every peer) takes RandomResizedCrop from the whole photograph, decoded
anew each epoch (SIMSIAM.md section 3). The decoded cache (:mod:`simsiam.data.cache`)
stores a folder of mixed sizes as centre squares, so its crops miss the sides of a wide
photo; this path does not. Per image, in DataLoader worker processes:

1. read the header: size and EXIF orientation (the crop boxes are drawn in the image as
   it is shown, i.e. after the orientation);
2. draw each view's box with torchvision's ``RandomResizedCrop.get_params`` rule
   (:func:`~simsiam.augment.batched.sample_crops`; generator seeded from (seed, epoch,
   index), so the boxes do not depend on workers or order and a resumed run draws the same);
3. decode, for a JPEG at the smallest DCT scale (1/2, 1/4, 1/8: Pillow's ``Image.draft``)
   that still leaves every box at least the view size (so the crop is still shrunk, never
   enlarged, by the resize), only when ``data.jpeg_draft``;
4. apply the orientation and convert the mode (:func:`~simsiam.data.cache._to_rgb`, the
   cache's rules), then cut and resize each box in one step with PIL's antialiased
   bilinear filter (``Image.resize(box=...)``, torchvision's PIL path), as uint8.

The batch of uint8 crops then goes to the training device, where the view recipe's other
operations (jitter, grayscale, blur, solarize, flip, normalisation) run batched
(:meth:`~simsiam.augment.batched.BatchedViewAugment.views_from_crops`), from one generator
per batch as on the cache path. A file that cannot be decoded is replaced in its batch by
the next image (so every batch is full) and named in a :class:`~simsiam.errors.DataWarning`;
with ``data.strict`` the run stops on it with a :class:`~simsiam.errors.DataError`.
"""

from __future__ import annotations

import math
import signal
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset

from simsiam.augment.batched import CropSpec, sample_crops
from simsiam.data.decode import (
    ImageSource,
    decode_reason,
    header_size,
    open_image,
    oriented_size,
    read_image,
    skip_warning,
    strict_error,
    to_rgb,
)
from simsiam.data.device_loader import batch_seed
from simsiam.data.sampling import EpochShuffleSampler, view_seed
from simsiam.errors import DataError, DataWarning


def draft_scale(boxes: Sequence[tuple[int, int, int, int]], sizes: Sequence[int]) -> int:
    """The largest JPEG DCT reduction (1, 2, 4 or 8) that leaves every box (``(top, left,
    height, width)``) at least its view's ``size`` on both sides."""
    room = min(min(h, w) / s for (_, _, h, w), s in zip(boxes, sizes, strict=True))
    return max((r for r in (1, 2, 4, 8) if r <= room), default=1)


def draw_boxes(width: int, height: int, specs: Sequence[CropSpec],
               g: torch.Generator) -> list[tuple[int, int, int, int]]:
    """One ``(top, left, height, width)`` box per spec in a ``width`` x ``height`` image,
    drawn one after the other from ``g`` with torchvision's ``RandomResizedCrop`` rule."""
    boxes = []
    for spec in specs:
        top, left, h, w = sample_crops(g, 1, height, width, spec.scale, spec.ratio)
        boxes.append((int(top), int(left), int(h), int(w)))
    return boxes


def stream_crops(src: ImageSource, specs: Sequence[CropSpec], g: torch.Generator,
                 draft: bool = True) -> list[np.ndarray]:
    """The crops of one image: one ``(size, size, 3)`` uint8 array per spec, each box
    drawn from the whole image with torchvision's rule (see the module docstring).

    Args:
        src: the image file (or a callable returning its bytes).
        specs: each view's area range, aspect range and output side.
        g: a CPU generator (the boxes' random stream).
        draft: allow Pillow's reduced-size JPEG decoding when every box leaves room.

    Raises:
        whatever PIL raises on a damaged file (callers turn it into a skip or a DataError).
    """
    with open_image(src) as raw:
        width, height = oriented_size(raw)
        boxes = draw_boxes(width, height, specs, g)
        if draft and raw.format == "JPEG":
            r = draft_scale(boxes, [s.size for s in specs])
            if r > 1:
                stored = raw.size
                raw.draft("RGB", (math.ceil(stored[0] / r), math.ceil(stored[1] / r)))
        raw.load()  # decode now: truncation surfaces here
        im = to_rgb(ImageOps.exif_transpose(raw))
    sx, sy = im.size[0] / width, im.size[1] / height  # 1 unless drafted
    out = []
    for (top, left, h, w), spec in zip(boxes, specs, strict=True):
        # torchvision's resized_crop on a PIL image: crop first (the filter sees no pixel
        # outside the box), then resize; a drafted image's box is scaled, cut to whole
        # pixels around it, and the fraction left is resized as a box inside that cut.
        x0, y0, x1, y1 = left * sx, top * sy, (left + w) * sx, (top + h) * sy
        cut = (math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1))
        inner = (x0 - cut[0], y0 - cut[1], x1 - cut[0], y1 - cut[1])
        out.append(np.array(im.crop(cut).resize((spec.size, spec.size), Image.BILINEAR,
                                                box=inner, reducing_gap=None),
                            dtype=np.uint8))
    return out


def crops_or_reason(src: ImageSource, name: str, specs: Sequence[CropSpec],
                    g: torch.Generator, draft: bool = True
                    ) -> tuple[list[torch.Tensor] | None, tuple[str, str] | None]:
    """:func:`stream_crops` as ``(3, s, s)`` uint8 tensors and None, or for a damaged
    image None and ``(name, the reason it cannot be decoded)``."""
    try:
        crops = stream_crops(src, specs, g, draft)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged file: skipped, named by the loader
        return None, (name, decode_reason(exc))
    return [torch.from_numpy(c).permute(2, 0, 1) for c in crops], None


class BadFiles:
    """What a streaming loader does with the damaged files its workers met: each named once
    in a :class:`~simsiam.errors.DataWarning`, or with ``strict`` a DataError on the first."""

    def __init__(self, strict: bool) -> None:
        self.strict, self.reported = strict, set()

    def report(self, bad: list[tuple[str, str]]) -> None:
        """Warn about (or stop on) the ``(path, reason)`` pairs not reported before.

        Raises:
            DataError: ``strict`` and ``bad`` names a file.
        """
        first: dict[str, str] = {}  # a file met twice in one batch is named once
        for path, reason in bad:
            first.setdefault(path, reason)
        new = [(p, r) for p, r in first.items() if p not in self.reported]
        if not new:
            return
        if self.strict:
            path, reason = new[0]
            raise DataError(f"cannot decode image '{path}': {reason}. --strict (data.strict) "
                            "stops on the first file that cannot be decoded; remove or "
                            "replace it, or drop --strict to skip such files with a warning")
        self.reported.update(p for p, _ in new)
        lines = "\n  ".join(f"{p}: {r}" for p, r in new)
        warnings.warn(f"skipped {len(new)} image file(s) that cannot be decoded (each "
                      f"replaced in its batch by the next image; pass --strict to stop "
                      f"instead):\n  {lines}", DataWarning, stacklevel=4)


class StreamViews(Dataset):
    """Item ``(epoch, i)`` -> ``(crops, i', bad)``: the uint8 crops of image ``i`` (a list of
    ``(3, size, size)`` tensors, one per spec), the index they came from, and ``(path,
    reason)`` of each file skipped on the way (a damaged file is replaced by the next
    image, ``i' = i + 1``, ... modulo N).

    Args:
        sources: one :data:`ImageSource` per image; ``names`` gives how to call them.
        specs: the view crops (:meth:`~simsiam.augment.batched.BatchedViewAugment.crop_specs`).
        seed: the run's seed (with epoch and index: each image's boxes).
        draft: see :func:`stream_crops`.
    """

    def __init__(self, sources: Sequence[ImageSource], names: Sequence[str],
                 specs: Sequence[CropSpec], seed: int, draft: bool = True) -> None:
        self.sources, self.names, self.specs = sources, names, list(specs)
        self.seed, self.draft = seed, draft

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        bad: list[tuple[str, str]] = []
        for tries in range(min(len(self.sources), 64)):
            i = (index + tries) % len(self.sources)
            g = torch.Generator().manual_seed(view_seed(self.seed, epoch, i))
            crops, why = crops_or_reason(self.sources[i], self.names[i], self.specs, g,
                                         self.draft)
            if crops is not None:
                return crops, i, bad
            bad.append(why)
        raise DataError(f"none of {len(bad)} images from '{self.names[index]}' on could be "
                        f"decoded (first: {bad[0][1]}); check the data source")


def collate_crops(items: list) -> tuple[list[torch.Tensor], torch.Tensor, list]:
    """Batch :class:`StreamViews` items: one ``(B, 3, s, s)`` uint8 tensor per view, the
    int64 indices ``(B,)``, and every skipped ``(path, reason)``."""
    views = [torch.stack([it[0][v] for it in items]) for v in range(len(items[0][0]))]
    index = torch.tensor([it[1] for it in items], dtype=torch.int64)
    return views, index, [b for it in items for b in it[2]]


def worker_init(_: int) -> None:
    """A DataLoader worker: one thread (the workers share the cores with the training step),
    and SIGINT/SIGTERM left to the main process (it saves a checkpoint, then stops them)."""
    torch.set_num_threads(1)
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)


class StreamViewLoader:
    """Iterates ``(x1, x2, ..., index)`` as :class:`~simsiam.data.device_loader.BatchedViewLoader`
    does (float32 views on ``device``, int64 indices on the CPU), the crops streamed from
    the image files by ``num_workers`` DataLoader workers (:class:`StreamViews`).

    Args:
        sources, names: the training images (see :class:`StreamViews`).
        augment: the batched recipe, with ``crop_specs()`` and ``views_from_crops``.
        batch_size: images per batch on this process.
        seed: the run's seed.
        device: where the views are finished.
        num_workers: DataLoader worker processes (0: in this process).
        strict: a file that cannot be decoded stops the run (DataError) instead of a skip.
        draft: see :func:`stream_crops`.
        rank, world_size: data parallelism (:class:`EpochShuffleSampler`).

    Raises (while iterating):
        DataError: ``strict`` and a file could not be decoded (names it).
    """

    def __init__(self, sources: Sequence[ImageSource], names: Sequence[str], augment,
                 batch_size: int, seed: int, device: torch.device, num_workers: int = 2,
                 strict: bool = False, draft: bool = True, rank: int = 0,
                 world_size: int = 1) -> None:
        self.augment, self.batch_size, self.seed, self.device = augment, batch_size, seed, device
        self.bad = BadFiles(strict)
        self.sampler = EpochShuffleSampler(len(sources), seed, batch_size * world_size, rank,
                                           world_size)
        self.rank = rank if world_size > 1 else None
        self.dataset = StreamViews(sources, names, augment.crop_specs(), seed, draft)
        self.loader = DataLoader(self.dataset, batch_size=batch_size, sampler=self.sampler,
                                 drop_last=True, num_workers=num_workers,
                                 collate_fn=collate_crops,
                                 persistent_workers=num_workers > 0,
                                 pin_memory=device.type == "cuda",
                                 prefetch_factor=4 if num_workers else None,
                                 worker_init_fn=worker_init if num_workers else None)

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size

    def _batches(self, first: int) -> Iterator:
        """``(crops, index, bad)`` of each batch of the epoch from step ``first``."""
        return iter(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        epoch, start = self.sampler.epoch, self.sampler.start
        first = start // (self.batch_size * self.sampler.world_size)
        for b, (crops, index, bad) in enumerate(self._batches(first)):
            self.bad.report(bad)
            crops = [c.to(self.device, non_blocking=True) for c in crops]
            g = torch.Generator(self.device).manual_seed(
                batch_seed(self.seed, epoch, first + b, self.rank))
            yield (*self.augment.views_from_crops(crops, g), index)


class FileImages:
    """A lazy ``(N, side, side, 3)`` uint8 array of image files: ``images[i]``,
    ``images[a:b]`` and ``images[index_array]`` decode those files now (threads), with the
    cache's rules (:func:`~simsiam.data.cache.read_rgb`: shorter side resized to ``side``,
    centre crop). The stream path's training images, for what reads them whole (the kNN
    monitor's bank): nothing is stored on disk.

    A file that cannot be decoded reads as a black image here; the training stream names it.
    """

    def __init__(self, sources: Sequence[ImageSource], names: Sequence[str], side: int,
                 threads: int = 4) -> None:
        self.sources, self.names, self.side, self.threads = list(sources), list(names), side, \
            threads
        self.dtype = np.dtype(np.uint8)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.sources), self.side, self.side, 3)

    @property
    def nbytes(self) -> int:
        return len(self.sources) * self.side * self.side * 3

    def __len__(self) -> int:
        return len(self.sources)

    def _one(self, i: int) -> np.ndarray:
        src = self.sources[i]
        try:
            return read_image(src() if callable(src) else src, self.side)
        except MemoryError:
            raise
        except Exception:  # noqa: BLE001 - named by the training stream
            return np.zeros((self.side, self.side, 3), dtype=np.uint8)

    def take(self, indices) -> FileImages:
        """The images at ``indices`` (still lazy)."""
        idx = np.asarray(indices, dtype=np.int64)
        return FileImages([self.sources[i] for i in idx], [self.names[i] for i in idx],
                          self.side, self.threads)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self._one(int(key))
        idx = range(len(self))[key] if isinstance(key, slice) else np.asarray(key).tolist()
        out = np.empty((len(idx), self.side, self.side, 3), dtype=np.uint8)
        with ThreadPoolExecutor(self.threads) as pool:
            for row, img in enumerate(pool.map(self._one, idx)):
                out[row] = img
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        arr = self[:]
        return arr if dtype is None else arr.astype(dtype)


def check_headers(sources: Sequence[ImageSource], names: Sequence[str], strict: bool,
                  desc: str = "stream", threads: int = 8
                  ) -> tuple[np.ndarray, list[tuple[int, int] | None]]:
    """Read every image's header (format and size) before any training step:
    :func:`usable` of the sizes, and the sizes ``(w, h)`` (None: unreadable)."""
    with ThreadPoolExecutor(threads) as pool:
        sizes = list(pool.map(lambda src: header_size(src() if callable(src) else src),
                              sources))
    return usable(sizes, names, strict, desc), sizes


def usable(sizes: Sequence[tuple[int, int] | None], names: Sequence[str], strict: bool,
           desc: str = "stream") -> np.ndarray:
    """The indices of the images whose header reads (``sizes[i]`` not None): the others
    (empty files, not images, unknown formats) are skipped with one
    :class:`~simsiam.errors.DataWarning` naming each, as the cache does. A file whose
    header reads but whose pixels are damaged is found later, by the stream.

    Raises:
        DataError: ``strict`` and a header cannot be read (names the first); or none can.
    """
    skipped = [(names[i], "cannot read the image header (not an image, empty or damaged)")
               for i, size in enumerate(sizes) if size is None]
    if skipped and strict:
        raise strict_error(skipped, len(sizes))
    kept = np.asarray([i for i, size in enumerate(sizes) if size is not None], dtype=np.int64)
    if not len(kept):
        raise DataError(f"none of the {len(sizes)} image files could be read (first: "
                        f"'{skipped[0][0]}'); check the data source")
    skip_warning(skipped, len(sizes), desc, stacklevel=4)
    return kept

"""What a training batch is, and how it reaches the training device.

The trainer never unpacks a batch: it calls ``batch.to(device, memory_format)``, hands
``batch.inputs`` to the method and ``batch.index`` to the online probe, and counts
``len(batch)`` images. A method names its kind of batch (``Method.batch_kind``) and
:func:`simsiam.data.loaders.make_batches` builds the matching loader, so a new kind
(images with token ids for CLIP, say) needs a batch class and a loader here, and no
change to the loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class ViewBatch:
    """The augmented views of one batch of images and their dataset indices.

    Attributes:
        views: two or more float tensors ``(B, 3, H_v, W_v)`` (multi-crop views may be
            smaller), normalised.
        index: ``(B,)`` int64 dataset indices of the images (on the CPU).
    """

    views: list[torch.Tensor]
    index: torch.Tensor

    @property
    def inputs(self) -> list[torch.Tensor]:
        """What the method's ``forward`` takes: the list of views."""
        return self.views

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def to(self, device: torch.device,
           memory_format: torch.memory_format = torch.preserve_format) -> ViewBatch:
        """The views on ``device`` in ``memory_format`` (asynchronous copies); the indices
        stay where they are."""
        return ViewBatch([v.to(device, non_blocking=True, memory_format=memory_format)
                          for v in self.views], self.index)


class ViewBatches:
    """A loader of ``(x1, x2, ..., index)`` tuples seen as :class:`ViewBatch` objects.

    ``sampler`` and ``len()`` are the wrapped loader's (``sampler.set_epoch`` before each
    epoch, as with the loader itself).
    """

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.sampler = loader.sampler

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[ViewBatch]:
        for *views, index in self.loader:
            yield ViewBatch(list(views), index)


@dataclass
class CaptionBatch:
    """Images, one augmented view each, with one caption each (CLIP's kind of batch).

    Attributes:
        images: ``(B, 3, H, W)`` float, normalised.
        tokens: ``(B, L)`` int64 token ids of each image's caption for this epoch.
        index: ``(B,)`` int64 dataset indices of the images (on the CPU).
    """

    images: torch.Tensor
    tokens: torch.Tensor
    index: torch.Tensor

    @property
    def inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """What the method's ``forward`` takes: ``(images, tokens)``."""
        return self.images, self.tokens

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def to(self, device: torch.device,
           memory_format: torch.memory_format = torch.preserve_format) -> CaptionBatch:
        """Images and tokens on ``device`` (asynchronous copies); the indices stay."""
        return CaptionBatch(self.images.to(device, non_blocking=True,
                                           memory_format=memory_format),
                            self.tokens.to(device, non_blocking=True), self.index)


class CaptionBatches:
    """A loader of ``(view, index)`` tuples joined with each image's caption of the epoch.

    Args:
        loader: yields ``(images (B, 3, H, W), index (B,))`` and has ``.sampler`` (its
            ``epoch`` picks the captions).
        tokens: ``(N, K, L)`` int32 token ids of every caption of every image.
        counts: ``(N,)`` captions per image.
        seed: the run's seed (see :func:`simsiam.data.tokens.caption_choice`).
    """

    def __init__(self, loader: Any, tokens: torch.Tensor, counts: torch.Tensor,
                 seed: int) -> None:
        self.loader, self.tokens, self.counts, self.seed = loader, tokens, counts, seed
        self.sampler = loader.sampler

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[CaptionBatch]:
        from simsiam.data.tokens import caption_choice

        choice = caption_choice(self.counts, self.seed, self.sampler.epoch)
        for images, index in self.loader:
            yield CaptionBatch(images, self.tokens[index, choice[index]].long(), index)

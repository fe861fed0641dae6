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

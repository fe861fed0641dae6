"""The data layer's types: a set of decoded images (:class:`ImageSet`), the train/held-out
split (:class:`DataSplits`) and the warning a capped source gives (:class:`CapWarning`).
Every source (:mod:`.folder`, :mod:`.captions`, :mod:`.shard_images`, ...) returns them;
the dispatcher :mod:`.dataset` picks the source."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simsiam.errors import DataWarning

__all__ = ["CapWarning", "DataSplits", "ImageSet"]


@dataclass
class ImageSet:
    """Decoded images with labels, and with captions when the source has them.

    Attributes:
        images: ``(N, S, S, 3)`` uint8 RGB, possibly a read-only memory map.
        labels: ``(N,)`` int64 class indices (evaluation only).
        classes: class names, ``labels`` index into it.
        paths: the source of each image (file path, ``cifar10/train/123``, or for a
            WebDataset shard ``shard.tar/key``).
        captions: one list of captions (at least one, in the source's order) per image,
            aligned with ``images``; None for sources without captions (folders, CIFAR).
    """

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    paths: list[str]
    captions: list[list[str]] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def labelled(self) -> bool:
        """Whether the labels mean anything: two classes or more. A flat folder (or one
        class folder, or ``data.labels: none``) is unlabelled: no accuracy is computed."""
        return len(self.classes) > 1

    def without_labels(self) -> ImageSet:
        """The same images as one unnamed class (``data.labels: none``)."""
        return ImageSet(self.images, np.zeros(len(self), dtype=np.int64), [""], self.paths,
                        self.captions)

    def subset(self, indices: np.ndarray) -> ImageSet:
        """The images at ``indices`` (a copy for a memory map's fancy indexing), with their
        captions."""
        indices = np.asarray(indices, dtype=np.int64)
        captions = None if self.captions is None else [self.captions[i] for i in indices]
        images = (self.images.take(indices) if hasattr(self.images, "take")
                  else self.images[indices])  # files to stream stay lazy
        return ImageSet(images, self.labels[indices], self.classes,
                        [self.paths[i] for i in indices], captions)


@dataclass
class DataSplits:
    """The splits of a source and how they were made: the numbers of the start-up summary.

    Attributes:
        train, test: the training images and the held-out images (None: none).
        source: ``data.source`` as given.
        found: images in the source's training part (files of a folder, or samples; for
            caption data the images with a usable row).
        test_found: images in the source's own test split (``test/``, ``val/``, CIFAR's
            test set); 0 when the held-out images come out of the training part.
        held_out: images held out of the training part (``data.holdout_fraction``).
        capped: training images left out by ``data.per_class``.
        skipped: image files that could not be decoded (named in a DataWarning).
        folder: whether the source is a folder (not a torchvision dataset).
        pipeline: how the training images are read: ``cache`` (decoded once) or ``stream``
            (decoded from the files every epoch; ``train.images`` is lazy).
    """

    train: ImageSet
    test: ImageSet | None
    source: str
    found: int
    test_found: int = 0
    held_out: int = 0
    capped: int = 0
    skipped: int = 0
    folder: bool = True
    pipeline: str = "cache"


class CapWarning(DataWarning):
    """``data.per_class`` left out images of a folder (names both numbers)."""

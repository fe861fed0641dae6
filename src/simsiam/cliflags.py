"""Numeric command-line flags, checked against the same ranges as the config keys they
stand for (:mod:`simsiam.config.validate`), before any work.

Each flag's ``type=`` is a :class:`Bounded`: argparse calls it on the text, and a value
out of range (or not a number) stops the command with exit code 2 and ``argument --k: 0
is out of range: use an integer >= 1 (eval.knn_k)``, naming the flag, the value and the
allowed range.
"""

from __future__ import annotations

import argparse
import math


class Bounded:
    """An argparse ``type``: an int or float within ``[low, high]`` (an end is open with
    ``low_open`` / ``high_open``; None: unbounded).

    Args:
        kind: ``int`` or ``float``.
        low, high: the bounds.
        key: the config key the flag stands for, named in the message.

    Calling it with the flag's text returns the number.

    Raises:
        argparse.ArgumentTypeError: not a number of ``kind``, not finite, or out of range.
    """

    def __init__(self, kind: type, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, key: str = "") -> None:
        self.kind, self.low, self.high = kind, low, high
        self.low_open, self.high_open, self.key = low_open, high_open, key
        self.__name__ = kind.__name__  # argparse names the type in its own messages

    def words(self) -> str:
        """The allowed range in words: ``an integer >= 1``, ``a number > 0``,
        ``a number in [0, 1)``."""
        what = "an integer" if self.kind is int else "a number"
        if self.low is not None and self.high is not None:
            return (f"{what} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                    f"{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"{what} {'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{what} {'<' if self.high_open else '<='} {self.high:g}"
        return what

    def __call__(self, text: str) -> int | float:
        where = f" ({self.key})" if self.key else ""
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {self.words()}{where}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text} is not a finite number: use "
                                             f"{self.words()}{where}")
        bad = False
        if self.low is not None:
            bad |= value <= self.low if self.low_open else value < self.low
        if self.high is not None:
            bad |= value >= self.high if self.high_open else value > self.high
        if bad:
            raise argparse.ArgumentTypeError(f"{text} is out of range: use {self.words()}{where}")
        return value


# The flags' ranges: those of the config keys (simsiam.config.validate).
POSITIVE_INT = Bounded(int, 1)
EPOCHS = Bounded(int, 1, key="train.epochs")
BATCH = Bounded(int, 2, key="train.batch_size")
PER_CLASS = Bounded(int, 1, key="data.per_class")
TEST_PER_CLASS = Bounded(int, 1, key="data.test_per_class")
SEED = Bounded(int, 0, 2**63 - 1, key="train.seed")
IMAGE_SIZE = Bounded(int, 8, 4096, key="data.image_size")
HOLDOUT = Bounded(float, 0.0, 1.0, high_open=True, key="data.holdout_fraction")
KNN_K = Bounded(int, 1, key="eval.knn_k")
KNN_T = Bounded(float, 0.0, low_open=True, key="eval.knn_t")
POSITIVE_FLOAT = Bounded(float, 0.0, low_open=True)
LINEAR_BATCH = Bounded(int, 2)  # the fast probe's BatchNorm needs 2 samples
COUNT = Bounded(int, 0)  # zero or more
SYNTHETIC = Bounded(int, 0, 1_000_000)  # bench --synthetic: random images held in memory

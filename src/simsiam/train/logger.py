"""Metrics: one JSON object per line in ``metrics.jsonl`` and TensorBoard scalars."""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

from simsiam.errors import DataWarning
from simsiam.fileio import disk_full_error, is_disk_full, read_jsonl


class MetricsLogger:
    """Appends records to ``RUN/metrics.jsonl`` and mirrors numbers to ``RUN/tb``.

    Each record is a dict with ``kind`` ("setup", "step", "epoch", "eval", ...) and
    ``step``; every
    other numeric field becomes a TensorBoard scalar ``<kind>/<field>`` at that step.
    """

    def __init__(self, run_dir: str | Path, tensorboard: bool = True,
                 purge_step: int | None = None) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self._file = open(self.path, "a", encoding="utf-8")
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: on resume, TensorBoard drops events at or after it.
            self._tb = SummaryWriter(str(Path(run_dir) / "tb"), purge_step=purge_step)

    def log(self, record: dict[str, Any]) -> None:
        """Append ``record`` as one line (and its numbers to TensorBoard).

        Raises:
            DiskFullError: no space left for the line: the file is cut back to its last
                whole record, so it stays readable (and ``--resume`` continues it).
        """
        line = json.dumps(record) + "\n"
        start = self._file.tell()
        try:
            self._file.write(line)
            self._file.flush()
        except OSError as exc:
            if not is_disk_full(exc, self.path.parent):
                raise
            self._cut_back(start)
            raise disk_full_error(self.path) from None
        if self._tb is not None:
            kind, step = record.get("kind", "misc"), int(record.get("step", 0))
            for key, value in record.items():
                if key in ("kind", "step") or isinstance(value, bool):
                    continue
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(f"{kind}/{key}", value, step)

    def _cut_back(self, size: int) -> None:
        """Drop a partly written line: truncate the file to ``size`` bytes and reopen it."""
        try:
            self._file.close()
        except OSError:
            pass  # the buffered remainder of the line cannot be written either: dropped
        os.truncate(self.path, size)
        self._file = open(self.path, "a", encoding="utf-8")

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


class NullLogger:
    """The metrics logger of processes other than rank 0 under torchrun: records go
    nowhere."""

    def log(self, record: dict[str, Any]) -> None:  # noqa: D102
        pass

    def close(self) -> None:  # noqa: D102
        pass


def read_metrics(run_dir: str | Path, missing_ok: bool = False) -> list[dict[str, Any]]:
    """All records of ``RUN/metrics.jsonl`` in order (``missing_ok``: none when the run
    never wrote the file, instead of FileNotFoundError). A last line cut short by a crash
    is skipped with a :class:`DataWarning` naming it (:func:`simsiam.fileio.read_jsonl`).

    Raises:
        ConfigError: a line before the last is not JSON (names the file and line).
    """
    path = Path(run_dir) / "metrics.jsonl"
    if missing_ok and not path.is_file():
        return []
    records, torn = read_jsonl(path)
    if torn:
        warnings.warn(DataWarning(torn), stacklevel=2)
    return records


def eval_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The monitor's evaluations among ``records``: kind ``eval`` (kind ``knn`` in runs of
    simsiam 0.1, which hold ``knn_top1``)."""
    return [r for r in records if r.get("kind") in ("eval", "knn")]


def knn_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The evaluations among ``records`` that measured kNN top-1 (labelled data)."""
    return [r for r in eval_records(records) if "knn_top1" in r]

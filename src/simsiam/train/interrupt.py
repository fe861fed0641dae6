"""Stop a run cleanly on SIGINT / SIGTERM: finish the step, save a checkpoint, exit.

Clusters preempt jobs with SIGTERM (SLURM, Kubernetes) and users press Ctrl-C. Inside
:class:`StopSignals` the first such signal only sets a flag; the training loop checks it
after every step, writes a checkpoint that records the position inside the epoch, and
raises :class:`RunInterrupted`, so ``--resume`` continues from the next batch. A second
signal stops at once (``KeyboardInterrupt``), keeping the last checkpoint written.
"""

from __future__ import annotations

import signal
import sys
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunInterrupted(Exception):
    """The run stopped on a signal after saving a checkpoint.

    Attributes:
        signum: the signal number (``signal.SIGINT`` or ``signal.SIGTERM``).
    """

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum


class StopSignals:
    """Context manager that turns the first SIGINT/SIGTERM into a stop request.

    ``signum`` is None until a signal arrives. Handlers are installed only in the main
    thread (Python allows no other) and the previous handlers are restored on exit.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame) -> None:  # noqa: ARG002 - signal API
        if self.signum is not None:
            raise KeyboardInterrupt  # second signal: stop now
        self.signum = signum
        print(f"\nsimsiam: {signal.Signals(signum).name} received: finishing this step and "
              "saving a checkpoint (send it again to stop at once)", file=sys.stderr,
              flush=True)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()


def ignore_stop_signals() -> None:
    """For DataLoader worker processes: leave SIGINT/SIGTERM to the main process, which
    stops the workers itself after saving (a Ctrl-C reaches the whole process group)."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)

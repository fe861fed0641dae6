"""Stop a run cleanly on SIGINT / SIGTERM: finish the step, save a checkpoint, exit.

Clusters preempt jobs with SIGTERM (SLURM, Kubernetes) and users press Ctrl-C. Inside
the training loop (:class:`StopSignals` after ``defer()``) the first such signal only
sets a flag; the loop checks it after every step, writes a checkpoint that records the
position inside the epoch, and raises :class:`RunInterrupted`, so ``--resume`` continues
from the next batch. Before training starts, and on a second signal, it stops at once
(:class:`RunInterrupted`), keeping the last checkpoint written.
"""

from __future__ import annotations

import signal
import sys
import threading

from simsiam.launch import resume_command

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
    """Context manager that turns SIGINT/SIGTERM into a clean stop.

    Until :meth:`defer` is called (while data are read and the model is built) a signal
    stops at once with :class:`RunInterrupted`: nothing is lost, every file written so
    far is written atomically. After ``defer()`` (the training loop) the first signal
    only sets ``signum``; the loop saves a checkpoint and stops at the next step
    boundary. A second signal stops at once. Handlers are installed only in the main
    thread (Python allows no other) and the previous handlers are restored on exit.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.deferred = False
        self._previous: dict[int, object] = {}

    def defer(self) -> None:
        """From now on the first signal only requests a stop (see the class docstring)."""
        self.deferred = True

    def _handle(self, signum: int, frame) -> None:  # noqa: ARG002 - signal API
        name = signal.Signals(signum).name
        if not self.deferred:
            raise RunInterrupted(signum, f"stopped by {name} before training started; "
                                 "nothing was lost (files are written atomically)")
        if self.signum is not None:  # second signal: stop now
            raise RunInterrupted(signum, f"stopped at once by a second {name}; the step in "
                                 "progress was not saved. Continue from the last checkpoint "
                                 "with --resume (if the run has none yet, start it again "
                                 "with --overwrite)")
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



def stopped_message(name: str, state, steps_per_epoch: int, checkpointer) -> str:
    """The line a run stopped by signal ``name`` (``"SIGTERM"``) ends with: where it
    stopped (``state``: a :class:`~simsiam.train.state.RunState`), the checkpoint saved
    (``checkpointer.path``) and the command that continues it, shell-quoted
    (:func:`simsiam.launch.resume_command`)."""
    where = (f"epoch {state.epoch + 1}, batch {state.batch_in_epoch}/{steps_per_epoch}"
             if state.batch_in_epoch else f"end of epoch {state.epoch}")
    return (f"stopped by {name} at step {state.step} ({where}); checkpoint saved to "
            f"{checkpointer.path}. Continue with: {resume_command(checkpointer.out)}")

"""Training: the loop and the named objects it is made of.

Public names (imported on first use, so that importing a leaf such as
``simsiam.train.state`` stays cheap and free of import cycles):

- :func:`pretrain` (:mod:`.trainer`), :class:`RunResult` (:mod:`.state`): a whole run;
- :func:`train_step`, :func:`use_bf16`, :func:`bf16_for_run` (:mod:`.step`): one step;
- :func:`build_optimizer`, :data:`OPTIMIZERS` (:mod:`simsiam.optim.factory`): the optimizer factory;
- :class:`LrSchedule`, :func:`cosine_lr`, :func:`scaled_lr` (:mod:`simsiam.optim.schedule`);
- :class:`RunState` (:mod:`.state`), :class:`Checkpointer` (:mod:`.checkpoint`),
  :class:`NonFiniteGuard` (:mod:`.guards`), :class:`MetricsLogger` and
  :func:`read_metrics` (:mod:`.logger`).
"""

from __future__ import annotations

from simsiam.lazy import LazyExports

_EXPORTS = {
    "pretrain": "trainer", "RunResult": "state",
    "train_step": "step", "use_bf16": "step", "bf16_for_run": "step",
    "build_optimizer": "optim", "OPTIMIZERS": "optim",
    "LrSchedule": "schedule", "cosine_lr": "schedule", "scaled_lr": "schedule",
    "RunState": "state", "Checkpointer": "checkpoint", "NonFiniteGuard": "guards",
    "MetricsLogger": "logger", "read_metrics": "logger",
}

__all__ = sorted(_EXPORTS)

_LAZY = LazyExports(__name__, _EXPORTS)
__getattr__ = _LAZY.attribute
__dir__ = _LAZY.names

"""The collapse guard (:class:`CollapseGuard`) on the measures of :mod:`simsiam.measures`
(the paper's std of Figure 2 and RankMe's effective rank), which this module re-exports."""

from __future__ import annotations

from simsiam.measures import collapse_std, effective_rank, healthy_std, rank_reference

__all__ = ["CollapseGuard", "collapse_std", "effective_rank", "healthy_std", "rank_reference"]


class CollapseGuard:
    """Flags a run whose collapse measure stays below a threshold for ``patience`` steps.

    Feed it ``(step, value)`` pairs of its ``measure`` as they are logged; :meth:`update`
    returns True once, when the value has been under the threshold at every check from
    some step s to the current step t with ``t - s + 1 >= patience``.

    - ``measure="std"`` (the paper's, :func:`collapse_std`): threshold ``ratio / sqrt(d)``;
      a healthy run sits near 1/sqrt(d), one without stop-gradient falls towards 0 (paper
      Fig. 2) unless z leaves an affine-free BN (see the module docstring).
    - ``measure="rank"`` (:func:`effective_rank` of z): threshold ``ratio x healthy``,
      ``healthy`` being :func:`rank_reference` for the batch rows and d.

    Args:
        dim: d, the width of z.
        ratio: threshold as a fraction of the healthy value (0.3 by default).
        patience: steps the value must stay under the threshold.
        measure: "std" or "rank".
        healthy: the healthy value of a ``rank`` guard (required for it).

    Raises:
        ValueError: an unknown measure, or a rank guard without ``healthy``.
    """

    def __init__(self, dim: int, ratio: float = 0.3, patience: int = 100,
                 measure: str = "std", healthy: float | None = None) -> None:
        if measure not in ("std", "rank") or (measure == "rank" and healthy is None):
            raise ValueError(f"CollapseGuard needs measure 'std', or 'rank' with its healthy "
                             f"value; got measure={measure!r} healthy={healthy}")
        self.measure = measure
        self.healthy = healthy_std(dim) if measure == "std" else float(healthy)
        self.ratio = ratio
        self.threshold = ratio * self.healthy
        self.patience = patience
        self.since: int | None = None
        self.fired = False
        self.last = float("nan")

    @classmethod
    def for_run(cls, eval_cfg, dim: int, method_measure: str,
                rank_healthy: float) -> CollapseGuard:
        """The guard of a run: on ``eval.collapse_measure``, or with ``auto`` on the
        method's ``collapse_measure`` (the one that can see a collapse of its z), with
        ``eval.collapse_ratio`` or ``eval.rank_ratio`` and ``eval.collapse_patience``."""
        e = eval_cfg
        measure = method_measure if e.collapse_measure == "auto" else e.collapse_measure
        ratio = e.rank_ratio if measure == "rank" else e.collapse_ratio
        return cls(dim, ratio, e.collapse_patience, measure, rank_healthy)

    def update(self, step: int, value: float) -> bool:
        """Record the measure at ``step``; True the first time the guard fires."""
        self.last = value
        if value >= self.threshold:
            self.since = None
            return False
        if self.since is None:
            self.since = step
        if not self.fired and step - self.since + 1 >= self.patience:
            self.fired = True
            return True
        return False

    def message(self, step: int) -> str:
        """The warning text, with the numbers."""
        if self.measure == "std":
            what = (f"the collapse metric (std of l2-normalised z) has stayed below "
                    f"{self.threshold:.4f} = {self.ratio:.2f}/sqrt(d) since step {self.since} "
                    f"(now {self.last:.5f} at step {step}; healthy is about "
                    f"{self.healthy:.4f}). The outputs are collapsing to a constant")
        else:
            what = (f"the effective rank of z (RankMe) has stayed below {self.threshold:.1f} "
                    f"= {self.ratio:.2f} x that of an isotropic batch ({self.healthy:.1f}) "
                    f"since step {self.since} (now {self.last:.1f} at step {step}). The "
                    "outputs span only a few directions")
        return (f"collapse: {what}: check the stop-gradient, the predictor and the learning "
                "rate")

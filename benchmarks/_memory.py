"""Peak memory of a benchmark process and its DataLoader workers (stdlib only).

Part of ``benchmarks/lightly_compare.py``: both sides (``_ours_runner.py`` in the
project's venv, ``_lightly_runner.py`` in lightly's) import it, so it uses nothing but the
standard library.
"""

from __future__ import annotations

import os


class TreeMemory:
    """Peak memory of this process and its descendants (DataLoader workers), sampled.

    A thread reads, every ``interval`` s, ``/proc/PID/smaps_rollup`` of this process and of
    every descendant. ``peak_tree_pss_mib``: the largest sum of their PSS (proportional set
    size: pages shared between a forked worker and its parent are split, not counted
    twice); ``peak_children_rss_mib``: the largest sum of the descendants' RSS alone.
    (``RUSAGE_CHILDREN`` is useless here: ``import torch`` itself forks a short-lived child
    whose inherited high-water mark is the parent's whole RSS.)
    """

    def __init__(self, interval: float = 0.25) -> None:
        import threading

        self.interval, self.pid = interval, os.getpid()
        self.peak_tree_pss_mib = self.peak_children_rss_mib = 0.0
        self.paused = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    @staticmethod
    def _rollup(pid: int) -> tuple[float, float]:
        rss = pss = 0.0
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss = int(line.split()[1]) / 1024
                    elif line.startswith("Pss:"):
                        pss = int(line.split()[1]) / 1024
        except OSError:  # the process ended meanwhile
            pass
        return rss, pss

    def _descendants(self) -> list[int]:
        parent: dict[int, int] = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    with open(f"/proc/{name}/stat") as f:
                        parent[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    pass
        found, todo = [], [self.pid]
        while todo:
            p = todo.pop()
            kids = [c for c, pp in parent.items() if pp == p]
            found += kids
            todo += kids
        return found

    def sample(self) -> None:
        _, pss = self._rollup(self.pid)
        child_rss = 0.0
        for c in self._descendants():
            r, q = self._rollup(c)
            pss, child_rss = pss + q, child_rss + r
        self.peak_tree_pss_mib = max(self.peak_tree_pss_mib, pss)
        self.peak_children_rss_mib = max(self.peak_children_rss_mib, child_rss)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            if not self.paused:
                self.sample()

    def pause(self) -> None:
        """Sample now, then not until :meth:`resume`: the sampler reads /proc and holds the
        GIL, which on 2 cores slowed the timed steps by up to 30% (measured), so it is
        paused while steps are timed. Memory is at its steady state after the warm-up."""
        self.sample()
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self.sample()

    def stop(self) -> dict[str, float]:
        """Stop sampling; peaks in MiB, with this process's ``ru_maxrss``."""
        import resource

        self._stop.set()
        self._thread.join()
        self.sample()
        return {"rss_main_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "pss_tree_mib": self.peak_tree_pss_mib,
                "rss_children_mib": self.peak_children_rss_mib}

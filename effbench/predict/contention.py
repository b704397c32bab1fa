"""Did anything else want the cores while the probe ran? `effbench check` projects hours from a
probe of minutes: a probe slowed (or sped up) by other work misleads it, so check says so and
widens its interval by the share of the cores others took.

Linux's /proc/stat gives the machine's busy time and the hypervisor's steal; psutil gives this
process tree's own CPU time; the difference is everyone else's.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from effbench.execute.cpu import cores

# Others using more than this share of our cores (or steal above it) is contention.
CONTENDED_SHARE = 0.2


def _machine_busy() -> tuple[float, float] | None:
    """(busy seconds of all CPUs, steal seconds) since boot; None where /proc/stat is absent."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    v = [int(x) / tick for x in first[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (v + [0.0] * 8)[:8]
    return user + nice + system + irq + softirq, steal


def _tree_cpu() -> float:
    """CPU seconds of this process, its live children and those already reaped."""
    me = psutil.Process()
    t = me.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for p in me.children(recursive=True):
        try:
            c = p.cpu_times()
            total += c.user + c.system
        except psutil.NoSuchProcess:
            continue
    return total


@dataclass(frozen=True)
class Contention:
    seconds: float
    other_cores: float  # cores' worth of CPU time used by other processes, on average
    steal_share: float  # of our cores' time, taken by the hypervisor
    cores: int

    @property
    def share(self) -> float:
        """What others took, as a share of the cores this process may use."""
        return (self.other_cores + self.steal_share * self.cores) / self.cores

    @property
    def contended(self) -> bool:
        return self.share > CONTENDED_SHARE

    @property
    def widen(self) -> float:
        """The factor check widens its interval by: the probe's pace may be off by what others
        took, either way (they may stop, or more may come)."""
        return 1.0 + self.share if self.contended else 1.0

    def to_json(self) -> dict:
        return {"seconds": round(self.seconds, 3), "other_cores": round(self.other_cores, 3),
                "steal_share": round(self.steal_share, 4), "cores": self.cores, "share": round(self.share, 3),
                "contended": self.contended, "interval_widened_by": round(self.widen, 3)}


class CpuWatch:
    """Context manager: `with CpuWatch() as w: ...` then `w.result` (None without /proc/stat).
    Machine-wide busy time counts every core, so others' use is read against the whole machine
    and reported as cores' worth."""

    def __enter__(self) -> "CpuWatch":
        self._t0, self._busy0, self._ours0 = time.monotonic(), _machine_busy(), _tree_cpu()
        self.result: Contention | None = None
        return self

    def __exit__(self, *exc) -> None:
        busy1, ours1, dt = _machine_busy(), _tree_cpu(), time.monotonic() - self._t0
        if self._busy0 is None or busy1 is None or dt <= 0:
            return
        busy = busy1[0] - self._busy0[0]
        steal = busy1[1] - self._busy0[1]
        others = max(0.0, busy - (ours1 - self._ours0))
        n = cores()
        self.result = Contention(dt, others / dt, steal / (dt * (os.cpu_count() or n)), n)

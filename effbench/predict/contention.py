"""Did anything else want the cores while the probe ran? `effbench check` projects hours from a
probe of minutes: a probe slowed (or sped up) by other work misleads it, so check says so and
widens its interval by the share of the cores others took.

The hypervisor's steal is reported next to the cores' steal since boot, and not taken out of the
probe's pace: measured on a 2-core VM whose steal since boot is 0.5%, a 27% burst lasted the 6 s
of one probe and not its run, but 22-28% lasted the minutes of three probes AND their runs, where
taking it out made the projections worse (9.5-12% error became 14-32%).

Linux's /proc/stat gives each core's busy time and steal, read over the cores this process may
use (its affinity mask: work pinned elsewhere does not slow it); psutil gives this process tree's
own CPU time; the difference is everyone else's.
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


@dataclass(frozen=True)
class CpuTimes:
    """Seconds since boot from /proc/stat, summed over the cores this process may use: their
    busy time, the hypervisor's steal and their total (busy, idle and steal)."""

    busy: float
    steal: float
    total: float


def core_times(stat: str | None = None) -> CpuTimes | None:
    """`stat`: /proc/stat's text (read here when None); None where it is absent."""
    if stat is None:
        try:
            stat = Path("/proc/stat").read_text()
        except OSError:
            return None
    tick = os.sysconf("SC_CLK_TCK")
    mine = {f"cpu{i}" for i in os.sched_getaffinity(0)}
    busy = steal = total = 0.0
    for line in stat.splitlines():
        name, *fields = line.split()
        if not name.startswith("cpu"):
            break
        v = [int(x) / tick for x in fields]
        user, nice, system, idle, iowait, irq, softirq, st = (v + [0.0] * 8)[:8]
        if name in mine:
            busy += user + nice + system + irq + softirq
            steal += st
            total += user + nice + system + idle + iowait + irq + softirq + st
    return CpuTimes(busy, steal, total)


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
    usual_steal: float = 0.0  # the steal share of our cores since boot

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
                "steal_share": round(self.steal_share, 4), "usual_steal_share": round(self.usual_steal, 4),
                "cores": self.cores, "share": round(self.share, 3),
                "contended": self.contended, "interval_widened_by": round(self.widen, 3)}


class CpuWatch:
    """Context manager: `with CpuWatch() as w: ...` then `w.result` (None without /proc/stat).
    Others' use is reported as cores' worth of this process's cores."""

    def __enter__(self) -> "CpuWatch":
        self._t0, self._cpu0, self._ours0 = time.monotonic(), core_times(), _tree_cpu()
        self.result: Contention | None = None
        return self

    def __exit__(self, *exc) -> None:
        cpu1, ours1, dt = core_times(), _tree_cpu(), time.monotonic() - self._t0
        self.result = contention_between(self._cpu0, cpu1, ours1 - self._ours0, dt)


def contention_between(before: CpuTimes | None, after: CpuTimes | None, ours: float, seconds: float) -> Contention | None:
    """What others took between two readings, `ours` CPU seconds being this process tree's."""
    if before is None or after is None or seconds <= 0:
        return None
    n = cores()
    others = max(0.0, after.busy - before.busy - ours)
    spent = after.total - before.total  # our cores' time between the readings (~ seconds x n)
    steal = (after.steal - before.steal) / spent if spent > 0 else 0.0  # the same share as the usual one
    usual = before.steal / before.total if before.total > 0 else 0.0
    return Contention(seconds, others / seconds, max(0.0, steal), n, usual)

"""The fleet's overhead (issue 17): the whole `effbench fleet` command against a plain `effbench run`
of the same submissions, one after the other in one process each, side by side in one session.

Per submission: (fleet wall time - the plain runs' wall time) / submissions, and the ratio of the
two walls; for one submission (Ray's start paid by one) and for three on one slot (paid once,
scheduled three times). Both sides use the same cache folder (the merge is done once, before).
Quiet, and next to a busy process per core.
Run: .venv/bin/pytest bench/test_fleet_overhead.py -s --benchmark-only   (~8 min on 2 cores)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="the `fleet` extra (ray) is not installed")

EFFBENCH = [sys.executable, "-m", "effbench.cli"]
ARGS = ["--max-eval-instances", "5", "--budget", "none"]
pytestmark = pytest.mark.timeout(3600)


def _subs(tmp: Path, n: int) -> list[Path]:
    from effbench.demo import build_demo

    first = build_demo(tmp / "s0")
    subs = [first]
    for i in range(1, n):
        shutil.copytree(first, tmp / f"s{i}")
        m = (tmp / f"s{i}" / "effbench.toml").read_text()
        (tmp / f"s{i}" / "effbench.toml").write_text(m.replace('name = "demo"', f'name = "demo{i}"'))
        subs.append(tmp / f"s{i}")
    return subs


def _timed(*args) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([*EFFBENCH, *map(str, args)], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return time.perf_counter() - t0


def _hogs() -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(len(os.sched_getaffinity(0)))]


@pytest.mark.parametrize("n, condition", [(1, "quiet"), (3, "quiet"), (3, "loaded")])
def test_fleet_overhead_per_submission(benchmark, tmp_path, n, condition):
    """`loaded`: a busy process per core beside both sides, as users run effbench next to other work."""
    subs = _subs(tmp_path, n)
    cache = tmp_path / "cache"
    _timed("run", subs[0], *ARGS, "--out", tmp_path / "warm", "--cache-dir", cache)  # merges once, for both sides

    def measure():
        plain = sum(_timed("run", s, *ARGS, "--out", tmp_path / f"plain-{time.monotonic_ns()}", "--cache-dir", cache) for s in subs)
        fleet = _timed("fleet", *subs, *ARGS, "--slots", 1, "--out", tmp_path / f"fleet-{time.monotonic_ns()}", "--cache-dir", cache)
        return plain, fleet

    hogs = _hogs() if condition == "loaded" else []
    try:
        plain, fleet = benchmark.pedantic(measure, rounds=1, iterations=1)
    finally:
        for h in hogs:
            h.kill()
    over = (fleet - plain) / n
    benchmark.extra_info.update(plain_s=round(plain, 2), fleet_s=round(fleet, 2), overhead_per_submission_s=round(over, 2),
                                ratio=round(fleet / plain, 3))
    print(f"\n{condition}, {n} submission(s), 1 slot: plain `effbench run` x{n} {plain:.1f} s, `effbench fleet` {fleet:.1f} s:"
          f" ratio {fleet / plain:.2f}x, overhead {over:+.1f} s per submission (Ray's start, scheduling, the task's imports)")

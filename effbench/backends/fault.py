"""A fault-injecting backend for testing what a run does when its backend fails: the HF backend,
plus a delay per batch, and at a chosen batch a hang (sleeps forever), a crash (the process exits
at once, as an OOM kill would), a raise, a wrong number of results, or a death between batches;
a request that always makes its batch raise; a state where every batch raises (a broken CUDA
context) until a restart; failed (re)starts; a slow allocator-stats reply; a child process of the
backend's own (as vLLM's engine core on a GPU). The knobs never change
what the model answers. Configured through the manifest's `[backend_args]`; never a default
(selectable only where EFFBENCH_TESTING=1).

Batches are counted per worker process (1 = its first batch after the warm-up; a batch split
after a raise is one call per part). With `once` (and `state_dir`), each fault fires in one
process only, the first to reach it: a one-off fault that a restart or a `--resume` gets past.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from effbench.backends.hf import HFBackend
from effbench.backends.common import allocator_stats
from effbench.backends.options import FaultOptions
from effbench.contracts import WARM_UP_ID, GenerationRequest, GenerationResult
from effbench.submission import Submission


class FaultBackend(HFBackend):
    name = "fault"

    options_model = FaultOptions  # the HF options and the fault knobs (effbench/backends/options.py)

    def __init__(self, submission: Submission, *, cache_dir: Path | None = None, **options):
        super().__init__(submission, cache_dir=cache_dir, **options)
        o: FaultOptions = self.options  # each knob's meaning: FaultOptions
        self.delay_s, self.batch_s, self.slow_stats_s = o.delay_s, o.batch_s, o.slow_stats_s
        self.hang_on_batch, self.crash_on_batch, self.raise_on_batch = o.hang_on_batch, o.crash_on_batch, o.raise_on_batch
        self.die_between_batches_after, self.wrong_count_on_batch = o.die_between_batches_after, o.wrong_count_on_batch
        self.raise_on_request, self.broken_from_batch = o.raise_on_request, o.broken_from_batch
        self.fail_starts, self.child_process, self.once = list(o.fail_starts), o.child_process, o.once
        self.state_dir = Path(o.state_dir) if o.state_dir is not None else None
        self.child: subprocess.Popen | None = None
        if self.state_dir is not None:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        self.batches = 0
        self.broken = False

    def _fires(self, fault: str) -> bool:
        """Whether a fault fires: always, or with `once` only in the first process to get here
        (an exclusive create: exactly one process wins)."""
        if not self.once:
            return True
        try:
            (self.state_dir / f"fired-{fault}").open("x").close()
        except FileExistsError:
            return False
        return True

    def start(self) -> None:
        if self.fail_starts:
            count = self.state_dir / "starts"
            n = int(count.read_text()) + 1 if count.is_file() else 1
            count.write_text(str(n))
            if n in self.fail_starts:
                raise RuntimeError(f"injected start failure (start {n})")
        if self.child_process:
            self.child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"], stdin=subprocess.DEVNULL)
        super().start()

    def close(self) -> None:
        if self.child is not None:
            self.child.kill()
            self.child.wait()
        super().close()

    def generate(self, batch: Sequence[GenerationRequest]) -> list[GenerationResult]:
        if batch and batch[0].id == WARM_UP_ID:  # the worker's warm-up is not one of the run's batches
            return super().generate(batch)
        self.batches += 1
        n = self.batches
        if n == self.crash_on_batch and self._fires("crash"):
            os._exit(13)  # no cleanup, no exception: like a segfault or the OOM killer
        if n == self.raise_on_batch and self._fires("raise"):
            raise RuntimeError("injected backend error")
        if self.broken_from_batch is not None and n >= self.broken_from_batch and (self.broken or self._fires("broken")):
            self.broken = True
            raise RuntimeError("injected broken backend: every batch raises until a restart")
        if self.raise_on_request is not None and any(r.id.endswith(self.raise_on_request) for r in batch):
            raise RuntimeError(f"injected error for the request ending {self.raise_on_request!r}")
        if n == self.hang_on_batch and self._fires("hang"):
            while True:
                time.sleep(3600)
        time.sleep(self.delay_s)
        t0 = time.monotonic()
        results = super().generate(batch)
        if self.batch_s is not None:  # the test's own clock: batch times that a busy machine does not move
            time.sleep(max(0.0, self.batch_s - (time.monotonic() - t0)))
            now = time.time()  # the results land now, after the padding
            results = [replace(r, timings=replace(r.timings, finished=now)) for r in results]
        if n == self.wrong_count_on_batch and self._fires("wrong-count"):
            results = results[:-1]
        if n == self.die_between_batches_after and self._fires("die"):
            threading.Thread(target=self._exit_before_next_batch, args=(n,), daemon=True).start()
        return results

    def _exit_before_next_batch(self, n: int) -> None:
        """os._exit(13) once the worker's main thread waits for its next message (its answer to
        batch n was sent whole: the parent's next send finds a dead pipe), or, should the next
        batch have come in already, at once: either way batch n is answered and n+1 is lost."""
        main = threading.main_thread().ident
        connection = os.path.join("multiprocessing", "connection.py")
        while self.batches == n:
            frame = sys._current_frames().get(main)
            while frame is not None:
                if frame.f_code.co_name == "recv" and frame.f_code.co_filename.endswith(connection):
                    os._exit(13)
                frame = frame.f_back
            time.sleep(0.001)
        os._exit(13)

    def allocator_stats(self) -> dict:
        time.sleep(self.slow_stats_s)
        return allocator_stats()

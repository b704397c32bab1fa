"""The scheduler: the loop that runs a suite's planned batches (effbench/execute/order.py plans
them: the `helm` and `effbench` orders) against a deadline, journals each batch as it lands and
fans out duplicates. What it drives is an Executor (effbench/execute/executor.py); a stop asked
for by signal reaches it through StopSignals (effbench/execute/signals.py).

The deadline is elapsed time (time.monotonic) from the first request. At the deadline nothing new
starts and the batch in flight is cancelled: the worker holding it is killed, so a hung backend
cannot hold the run past it.

Whatever the worker does, execute() returns a report and never raises mid-run: every failure is
data. A worker that dies (mid-batch or between batches) costs its batch (failed results with the
reason) and is restarted, max_restarts times at most; a restart that fails is recorded and counts
as one; with none left, the rest is not started. A batch the backend raised on is split in halves
(effbench.execute.policy) so that only the request that causes it fails; after
restart_after_failures batches in a row on which every request raised (a broken CUDA context
fails them all), the worker is restarted. A stop request (StopSignals: SIGINT, SIGTERM) ends it
like the deadline: the batch in flight cancelled, the rest not started, what was answered kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

from effbench.contracts import EffbenchError, GenerationRequest, GenerationResult, Timings
from effbench.execute.executor import Executor
from effbench.execute.journal import Journal
from effbench.execute.order import plan_batches
from effbench.execute.policy import isolate
from effbench.execute.prefix import PrefixGroup
from effbench.execute.worker import BackendRaised, Interrupted, WorkerCrashed, WorkerTimeout

BatchCallback = Callable[[list[GenerationRequest], list[GenerationResult]], None]


class RestartFailed(Exception):
    """No worker could be started again (every restart allowed was tried)."""


@dataclass
class ExecutionReport:
    results: dict[str, GenerationResult]
    started: float  # wall-clock time of the first request (the budget's clock starts here)
    ended: float  # started + the monotonic seconds elapsed
    deadline: float | None  # wall clock, for the record; the scheduler counts on time.monotonic
    deadline_hit: bool = False
    cancelled: list[str] = field(default_factory=list)  # in flight when execution stopped
    not_started: list[str] = field(default_factory=list)
    restarts: int = 0
    crashes: list[str] = field(default_factory=list)
    batches: int = 0
    stopped: str | None = None  # why execution ended before every request was tried, or None


class Scheduler:
    restart_after_failures = 3  # batches in a row on which every request raised: restart the worker

    def __init__(self, executor: Executor, max_batch_size: int, max_restarts: int = 2,
                 stop: Callable[[], bool] | None = None):
        self.executor = executor
        self.max_batch_size = max_batch_size
        self.max_restarts = max_restarts
        self.stop = stop  # true once a stop is asked for (StopSignals.requested)

    def execute(
        self,
        requests: Sequence[GenerationRequest],
        lengths: dict[str, int],
        *,
        order: str = "effbench",
        budget_s: float | None = None,
        journal: Journal | None = None,
        on_batch: BatchCallback | None = None,
        groups: dict[str, PrefixGroup] | None = None,
    ) -> ExecutionReport:
        batches, dupes = plan_batches(requests, lengths, self.max_batch_size, order, groups)
        by_id = {r.id: r for r in requests}
        t0, m0 = time.time(), time.monotonic()
        end = None if budget_s is None else m0 + budget_s
        report = ExecutionReport({}, t0, t0, None if budget_s is None else t0 + budget_s)
        if journal is not None:
            journal.mark("execute", started=t0, deadline=report.deadline, order=order, requests=len(requests))

        def left() -> float | None:
            return None if end is None else end - time.monotonic()

        def record(batch: list[GenerationRequest], out: list[GenerationResult]) -> None:
            self._record(report, batch, out, dupes, by_id, journal, on_batch)

        failing = 0  # batches in a row on which every request raised
        for n, batch in enumerate(batches):
            try:
                self._may_go_on(left)
            except (WorkerTimeout, Interrupted) as e:
                self._stopped(report, e)
                report.not_started = [r.id for b in batches[n:] for r in b]
                break
            try:
                failing = self._batch(batch, failing, left, record, report)
            except (WorkerTimeout, Interrupted, RestartFailed) as e:
                self._stopped(report, e)
                report.cancelled = [r.id for r in batch if r.id not in report.results]
                report.not_started = [r.id for b in batches[n + 1 :] for r in b]
                break
        report.ended = t0 + (time.monotonic() - m0)
        if journal is not None and report.deadline_hit:
            journal.mark("deadline", at=report.ended, cancelled=len(report.cancelled), not_started=len(report.not_started))
        return report

    def _may_go_on(self, left: Callable[[], float | None]) -> None:
        """Before anything starts: Interrupted once a stop is asked for, WorkerTimeout past the deadline."""
        if self.stop is not None and self.stop():
            raise Interrupted("stop requested")
        remaining = left()
        if remaining is not None and remaining <= 0:
            raise WorkerTimeout("the deadline has passed")

    @staticmethod
    def _stopped(report: ExecutionReport, e: Exception) -> None:
        if isinstance(e, WorkerTimeout):
            report.deadline_hit, report.stopped = True, "deadline"
        elif isinstance(e, Interrupted):
            report.stopped = "interrupted"
        else:
            report.stopped = f"the backend worker could not be restarted: {e}"

    def _batch(self, batch, failing: int, left, record, report: ExecutionReport) -> int:
        """One planned batch, split where the backend raises; a worker that dies costs what of the
        batch was not answered yet, and is restarted. Returns the new count of failing batches."""
        raised: list[str] = []

        def generate(part: list[GenerationRequest]) -> list[GenerationResult]:
            self._may_go_on(left)
            return self.executor.generate(part, timeout=left(), stop=self.stop)

        def settle(part: list[GenerationRequest], outcomes: list) -> None:
            now = time.time()
            record(part, [_failed(r, str(o), now) if isinstance(o, BackendRaised) else o for r, o in zip(part, outcomes)])

        try:
            isolate(generate, batch, settle, lambda part, e: raised.append(str(e)))
        except WorkerCrashed as e:
            report.crashes.append(str(e))
            now = time.time()
            lost = [r for r in batch if r.id not in report.results]
            record(lost, [_failed(r, f"backend crashed: {e}", now) for r in lost])
            self._restart(report, left)
            return 0
        if not raised:
            return 0
        report.crashes.append(raised[0] if len(raised) == 1 else f"{raised[0]} (batch of {len(batch)} split: {len(raised)} calls raised)")
        if any(report.results[r.id].ok for r in batch):
            return 0
        if failing + 1 < self.restart_after_failures:
            return failing + 1
        report.crashes.append(f"the backend raised on every request of {failing + 1} batches in a row: restarting the worker")
        self._restart(report, left)
        return 0

    def _restart(self, report: ExecutionReport, left) -> None:
        """A fresh worker. Each attempt counts as a restart; one that fails is recorded and the next
        tried; RestartFailed when none is left. The deadline and a stop end it as they end a batch."""
        while report.restarts < self.max_restarts:
            self._may_go_on(left)
            report.restarts += 1
            self.executor.kill()
            try:
                self.executor.start(timeout=left(), stop=self.stop)
                return
            except (WorkerCrashed, EffbenchError, OSError) as e:
                report.crashes.append(f"restart {report.restarts} failed: {e}")
        raise RestartFailed(f"{self.max_restarts} restarts allowed, all used")

    def _record(self, report, batch, out, dupes, by_id, journal, on_batch) -> None:
        if not batch:
            return
        report.batches += 1
        fanned: list[GenerationResult] = []
        for req, res in zip(batch, out):
            res = replace(res, timings=replace(res.timings, queued=report.started))
            fanned.append(res)
            for dup in dupes.get(req.id, ()):  # same prompt, same parameters: same answer, no compute
                fanned.append(replace(res, request_id=dup, computed_tokens=0))
        for res in fanned:
            report.results[res.request_id] = res
        if journal is not None:
            journal.append(fanned)
        if on_batch is not None:
            on_batch([by_id[r.request_id] for r in fanned], fanned)


def _failed(req: GenerationRequest, error: str, now: float) -> GenerationResult:
    return GenerationResult(req.id, (), 0, 0, Timings(now, now, None, now), error=error)

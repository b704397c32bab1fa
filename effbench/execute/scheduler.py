"""The scheduler: every request of a suite is known before the first runs, so it orders and
batches them, enforces the deadline, journals each batch as it lands and fans out duplicates.

Orders:
- `helm`: the challenge's. Runs in config order; the requests of one run go out together in
  batches of up to max_batch_size (HELM's `-n`), never mixed with the next run's.
- `effbench`: identical greedy prompts computed once; the first request of every run first;
  then the rest in chunks of a few batches, each chunk from one prefix group (the requests whose
  prompts share a long common prefix, found from their tokens: a few-shot run's instructions and
  in-context examples; the rule is effbench/execute/prefix.py's), bucketed by max_tokens and prompt length (less padding), the chunk of the
  most starved group next. A chunk's batches share their prefix, so a backend computes it once per
  chunk (the HF backend's prefix cache, vLLM's prefix caching); chunks rotate, so under a tight
  budget every run has answers: the challenge's geometric mean punishes one empty scenario far
  more than a thin one.

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

import signal
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Protocol, Sequence

from effbench.contracts import EffbenchError, GenerationRequest, GenerationResult, Timings
from effbench.execute.policy import isolate
from effbench.execute.prefix import PrefixGroup, chunked
from effbench.execute.journal import Journal
from effbench.execute.worker import BackendRaised, Interrupted, WorkerCrashed, WorkerTimeout

BatchCallback = Callable[[list[GenerationRequest], list[GenerationResult]], None]
ORDERS = ("effbench", "helm")


class Executor(Protocol):
    """What the scheduler drives: a backend behind a deadline (worker.BackendWorker, InProcess)."""

    def generate(self, batch: Sequence[GenerationRequest], timeout: float | None = None,
                 stop: Callable[[], bool] | None = None) -> list[GenerationResult]: ...

    def start(self, timeout: float | None = None, stop: Callable[[], bool] | None = None) -> object: ...

    def kill(self) -> None: ...

    def close(self) -> None: ...


class InProcess:
    """A backend called directly: fastest, but a hang cannot be interrupted (no deadline), and a
    stop request is seen between batches only."""

    def __init__(self, backend):
        self.backend = backend

    def start(self, timeout=None, stop=None):
        return None

    def generate(self, batch, timeout=None, stop=None):
        try:
            return self.backend.generate(batch)
        except Exception as e:  # a backend bug: errors for this batch, as the worker reports it
            raise BackendRaised(f"backend raised {type(e).__name__}: {e}") from e

    def kill(self):
        pass

    def close(self):
        self.backend.close()


class StopSignals:
    """SIGINT and SIGTERM for the length of a run (a context manager; main thread only, elsewhere
    it changes nothing). Until arm(), they raise KeyboardInterrupt, as SIGINT does by default: the
    run is aborted and its worker killed. Once armed (execution started), the first only asks for a
    stop, which the scheduler sees within worker.POLL_S: the worker is killed, what was answered
    kept, and the caller scores and writes results before ending the run itself. A second one
    raises KeyboardInterrupt at once."""

    def __init__(self):
        self.signum: int | None = None
        self.armed = False
        self._saved: dict = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._saved[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._saved.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        self._saved.clear()

    def arm(self) -> None:
        self.armed = True

    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str | None:
        return signal.Signals(self.signum).name if self.signum is not None else None

    def _handle(self, signum, frame) -> None:
        if not self.armed or self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum


class RestartFailed(Exception):
    """No worker could be started again (every restart allowed was tried)."""


def _dedupe_key(r: GenerationRequest):
    if not r.greedy:
        return None  # sampled requests are independent draws: never merged
    return (r.prompt, r.max_tokens, r.stop_sequences, r.top_p, r.num_completions, r.top_k_per_token, r.echo_prompt)


def _length_batches(reqs: list[GenerationRequest], lengths: dict[str, int], max_batch_size: int) -> list[list[GenerationRequest]]:
    """Batches of equal max_tokens and similar length; longest first."""
    reqs = sorted(reqs, key=lambda r: (-r.max_tokens, -lengths[r.id]))
    batches: list[list[GenerationRequest]] = []
    for r in reqs:
        if batches and len(batches[-1]) < max_batch_size and batches[-1][0].max_tokens == r.max_tokens:
            batches[-1].append(r)
        else:
            batches.append([r])
    return batches


def plan_batches(
    requests: Sequence[GenerationRequest], lengths: dict[str, int], max_batch_size: int, order: str = "effbench",
    groups: dict[str, PrefixGroup] | None = None,
) -> tuple[list[list[GenerationRequest]], dict[str, list[str]]]:
    """(batches in execution order, duplicates: representative id -> ids answered by it).
    `groups` (from effbench.execute.prefix.prefix_groups): without it, each run is taken as its own group."""
    if order == "helm":
        batches, i = [], 0
        while i < len(requests):
            run = requests[i].origin.run
            j = i
            while j < len(requests) and requests[j].origin.run == run and j - i < max_batch_size:
                j += 1
            batches.append(list(requests[i:j]))
            i = j
        return batches, {}
    if order != "effbench":
        raise ValueError(f"unknown order {order!r}; one of {ORDERS}")

    unique: list[GenerationRequest] = []
    dupes: dict[str, list[str]] = {}
    first: dict[tuple, str] = {}
    for r in requests:
        key = _dedupe_key(r)
        if key is not None and key in first:
            dupes.setdefault(first[key], []).append(r.id)
            continue
        if key is not None:
            first[key] = r.id
        unique.append(r)

    def group_of(r: GenerationRequest) -> str:
        return groups[r.id].key if groups is not None and r.id in groups else "run:" + r.origin.run

    members: dict[str, list[GenerationRequest]] = {}
    for r in unique:
        members.setdefault(group_of(r), []).append(r)
    # First, one request of every run (a handful of batches), so that even a budget that ends
    # after them leaves no run, and so no scenario, with nothing.
    first_of_run: dict[str, GenerationRequest] = {}
    for r in unique:
        first_of_run.setdefault(r.origin.run, r)
    first = list(first_of_run.values())
    batches = _length_batches(first, lengths, max_batch_size)
    taken = {r.id for r in first}
    # Then chunk by chunk, each from one group, the most starved group (least of it scheduled) next:
    # groups advance together, while a chunk's batches share their prefix.
    chunks: dict[str, list[list[list[GenerationRequest]]]] = {}
    for g, reqs in members.items():
        rest = _length_batches([r for r in reqs if r.id not in taken], lengths, max_batch_size)
        chunks[g] = chunked(rest)
    done = {g: sum(r.id in taken for r in reqs) / len(reqs) for g, reqs in members.items()}
    while any(chunks.values()):
        g = min((g for g in chunks if chunks[g]), key=lambda g: done[g])
        chunk = chunks[g].pop(0)
        batches.extend(chunk)
        done[g] += sum(len(b) for b in chunk) / len(members[g])
    return batches, dupes


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

"""Batching for `effbench serve`: concurrent requests gathered into batches for one backend, and
what the server does under pressure. README, "The challenge's HTTP API, both ways".

A request waits in a queue; the batcher takes the first one, waits up to `window_s` from its
arrival for others (up to `max_batch` requests), then runs the batch in the one worker thread
that owns the backend (backends are not thread-safe: one batch at a time; /tokenize and /decode
run on that thread too). Requests that arrive while a batch runs form the next batch at once,
since their window has passed. If `generate` raises for a batch, the batch is split in halves and
each half re-run (recursively), so one poisonous request fails without failing its batch-mates,
in about 2*log2(batch) calls rather than one per request.

Under pressure: at most `max_queue` requests wait (a new one past that is refused with QueueFull,
not queued); a request without its answer after `request_timeout_s` (queueing included) gets
RequestTimeout, while its batch may still run on the backend's thread. The app (app.py) turns
these exceptions into status codes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from effbench.contracts import Backend, GenerationRequest, GenerationResult
from effbench.execute.executor import InProcess
from effbench.execute.policy import isolate
from effbench.execute.worker import BackendRaised

log = logging.getLogger("effbench.serve")


@dataclass
class ServeStats:
    """What the batcher did; GET /health shows it (tests check that batches really formed)."""

    batches: int = 0
    requests: int = 0
    largest_batch: int = 0
    batch_sizes: Counter = field(default_factory=Counter)
    backend_exceptions: int = 0  # generate() raised (the batch was then split and re-run)
    rejected: int = 0  # 429: the queue was full
    timed_out: int = 0  # 504: no answer within request_timeout_s

    def record(self, size: int) -> None:
        self.batches += 1
        self.requests += size
        self.largest_batch = max(self.largest_batch, size)
        self.batch_sizes[size] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "requests": self.requests,
            "largest_batch": self.largest_batch,
            "mean_batch": round(self.requests / self.batches, 3) if self.batches else 0.0,
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
            "backend_exceptions": self.backend_exceptions,
            "rejected": self.rejected,
            "timed_out": self.timed_out,
        }


class BackendFailure(Exception):
    """generate() raised for a request even when run alone (a 500, not the client's fault)."""


class QueueFull(Exception):
    """max_queue requests are already waiting (a 429: come back after `retry_after_s`)."""

    def __init__(self, queued: int, retry_after_s: int):
        super().__init__(f"server busy: {queued} requests already queued; retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class RequestTimeout(Exception):
    """No answer within request_timeout_s (a 504: the server's fault, e.g. a hung batch)."""


@dataclass(eq=False)  # identity: submit() removes a waiter that gave up by `in` / remove()
class _Pending:
    request: GenerationRequest
    future: asyncio.Future
    arrived: float  # loop.time()


class Batcher:
    """Gathers concurrent requests into batches for one backend, run on one worker thread."""

    def __init__(self, backend: Backend, max_batch: int, window_s: float, max_queue: int, request_timeout_s: float):
        self.backend = backend
        self.max_batch = max_batch
        self.window_s = window_s
        self.max_queue = max_queue
        self.request_timeout_s = request_timeout_s
        self.stats = ServeStats()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="effbench-backend")
        self._pending: deque[_Pending] = deque()
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._counter = 0
        self.busy = False
        self.batch_started: float | None = None  # time.monotonic() of the running batch's start
        self.last_batch_s = 0.0

    def start(self) -> None:
        """Start the gathering task on the running loop (lifespan, or lazily on the first request)."""
        if self._task is None or self._task.done():
            self._arrived = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="effbench-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        while self._pending:
            p = self._pending.popleft()
            if not p.future.done():
                p.future.set_exception(BackendFailure("server shutting down"))
        self._executor.shutdown(wait=True)

    @property
    def queued(self) -> int:
        return len(self._pending)

    def running_s(self) -> float | None:
        """How long the batch in the backend has been running (None when idle)."""
        started = self.batch_started
        return None if started is None else time.monotonic() - started

    def retry_after_s(self) -> int:
        """A client's wait before the queue has room: the batches ahead times the last batch's
        duration (or the running one's, if longer: a slow or hung batch), at least 1 s."""
        per_batch = max(self.last_batch_s, self.running_s() or 0.0)
        return max(1, math.ceil(per_batch * math.ceil(self.queued / self.max_batch)))

    def next_id(self) -> str:
        self._counter += 1
        return f"serve-{self._counter}"

    async def submit(self, request: GenerationRequest) -> GenerationResult:
        """Queue the request and wait for its result: QueueFull at once when max_queue are waiting,
        RequestTimeout after request_timeout_s (it then leaves the queue, or its batch's answer is dropped)."""
        self.start()
        if len(self._pending) >= self.max_queue:
            self.stats.rejected += 1
            raise QueueFull(len(self._pending), self.retry_after_s())
        loop = asyncio.get_running_loop()
        p = _Pending(request, loop.create_future(), loop.time())
        self._pending.append(p)
        self._arrived.set()
        try:
            return await asyncio.wait_for(p.future, self.request_timeout_s)
        except TimeoutError:
            self.stats.timed_out += 1
            raise RequestTimeout(f"no answer within the request timeout of {self.request_timeout_s:g} s"
                                 f" (the backend's batch has run {self.running_s() or 0:.1f} s)") from None
        finally:
            if p in self._pending:  # gave up waiting (timeout, client gone): leave the queue; once in a batch, its answer is dropped
                self._pending.remove(p)

    async def on_worker(self, fn: Callable, *args) -> Any:
        """Run fn on the backend's thread (between batches), e.g. tokenize and decode; RequestTimeout
        as for /process (behind a hung batch it would wait forever)."""
        job = asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        try:
            return await asyncio.wait_for(job, self.request_timeout_s)
        except TimeoutError:
            self.stats.timed_out += 1
            raise RequestTimeout(f"no answer within the request timeout of {self.request_timeout_s:g} s") from None

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
            deadline = self._pending[0].arrived + self.window_s
            while len(self._pending) < self.max_batch and (left := deadline - loop.time()) > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), left)
                except TimeoutError:
                    break
            batch = [self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))]
            batch = [p for p in batch if not p.future.done()]  # a cancelled waiter (client gone) needs no answer
            if not batch:
                continue
            self.stats.record(len(batch))
            self.busy, self.batch_started = True, time.monotonic()
            try:
                outcomes = await loop.run_in_executor(self._executor, self._generate, [p.request for p in batch])
            except Exception as e:  # a bug in _generate itself; answer everyone, keep serving
                log.exception("batch failed")
                outcomes = [BackendFailure(f"{type(e).__name__}: {e}")] * len(batch)
            finally:
                self.last_batch_s = time.monotonic() - self.batch_started
                self.busy, self.batch_started = False, None
            for p, out in zip(batch, outcomes):
                if p.future.done():
                    continue
                if isinstance(out, BaseException):
                    p.future.set_exception(out)
                else:
                    p.future.set_result(out)

    def _generate(self, reqs: list[GenerationRequest]) -> list[GenerationResult | BackendFailure]:
        """On the worker thread. generate() returns a bad request's error as data; should it raise
        anyway, the batch is split in halves and each re-run, down to the requests that cause it
        (also right for a batch too big for memory: its halves may fit): effbench.execute.policy,
        the scheduler's policy too."""
        outcomes: list[GenerationResult | BackendFailure] = []

        def settle(part, results) -> None:
            outcomes.extend(_failure(r) if isinstance(r, BackendRaised) else r for r in results)

        def raised(part, e) -> None:
            self.stats.backend_exceptions += 1
            if len(part) == 1:
                log.error("backend.generate raised for request %s alone", part[0].id, exc_info=e)
            else:
                log.warning("backend.generate raised for a batch of %d (%s); splitting it", len(part), e)

        isolate(InProcess(self.backend).generate, reqs, settle, raised)
        return outcomes


def _failure(e: BackendRaised) -> BackendFailure:
    cause = e.__cause__  # the backend's own exception (InProcess wraps it); none for results that do not match
    return BackendFailure(f"backend failed: {type(cause).__name__}: {cause}" if cause is not None else f"backend failed: {e}")

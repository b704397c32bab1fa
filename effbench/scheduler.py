"""The scheduler: every request of a suite is known before the first runs, so it orders and
batches them, enforces the deadline, journals each batch as it lands and fans out duplicates.

Orders:
- `helm`: the challenge's. Runs in config order; the requests of one run go out together in
  batches of up to max_batch_size (HELM's `-n`), never mixed with the next run's.
- `effbench`: identical greedy prompts computed once; the first request of every run first;
  then the rest in chunks of a few batches, each chunk from one prefix group (the requests whose
  prompts share a long common prefix, found from their tokens: a few-shot run's instructions and
  in-context examples), bucketed by max_tokens and prompt length (less padding), the chunk of the
  most starved group next. A chunk's batches share their prefix, so a backend computes it once per
  chunk (the HF backend's prefix cache, vLLM's prefix caching); chunks rotate, so under a tight
  budget every run has answers: the challenge's geometric mean punishes one empty scenario far
  more than a thin one.

The deadline is wall clock from the first request. At the deadline nothing new starts and the
batch in flight is cancelled: the worker holding it is killed, so a hung backend cannot hold the
run past it. A crashed worker costs its batch (errors, as data) and is restarted while time is left.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Protocol, Sequence

from effbench.contracts import GenerationRequest, GenerationResult, Timings
from effbench.journal import Journal
from effbench.worker import BackendRaised, WorkerCrashed, WorkerTimeout

BatchCallback = Callable[[list[GenerationRequest], list[GenerationResult]], None]
ORDERS = ("effbench", "helm")
CHUNK_BATCHES = 4  # effbench order: batches of one prefix group that go out together
MIN_SHARED_PREFIX = 32  # tokens: a shorter common prefix is not worth caching (the HF backend's bar too)


@dataclass(frozen=True)
class PrefixGroup:
    key: str  # requests with the same key share their first `tokens` prompt tokens
    tokens: int  # 0: no prefix worth sharing (the group is then just the run)


def prefix_groups(requests: Sequence[GenerationRequest], token_ids: dict[str, Sequence[int]]) -> dict[str, PrefixGroup]:
    """Each run's longest common prompt prefix, in tokens. Runs with the same prefix form one group
    (keyed by the prefix's hash); a run whose prompts share fewer than MIN_SHARED_PREFIX tokens is
    a group of its own with no prefix. A single-request run shares nothing."""
    by_run: dict[str, list[GenerationRequest]] = {}
    for r in requests:
        by_run.setdefault(r.origin.run, []).append(r)
    out: dict[str, PrefixGroup] = {}
    for run, reqs in by_run.items():
        first = list(token_ids[reqs[0].id])
        n = len(first) - 1 if len(reqs) > 1 else 0  # every prompt keeps a token of its own
        for r in reqs[1:]:
            ids = token_ids[r.id]
            n = min(n, len(ids) - 1)
            k = 0
            while k < n and ids[k] == first[k]:
                k += 1
            n = k
        if n >= MIN_SHARED_PREFIX:
            group = PrefixGroup("prefix:" + hashlib.sha1(repr(first[:n]).encode()).hexdigest()[:16], n)
        else:
            group = PrefixGroup("run:" + run, 0)
        out.update({r.id: group for r in reqs})
    return out


class Executor(Protocol):
    """What the scheduler drives: a backend behind a deadline (worker.BackendWorker, InProcess)."""

    def generate(self, batch: Sequence[GenerationRequest], timeout: float | None = None) -> list[GenerationResult]: ...

    def start(self, timeout: float | None = None) -> object: ...

    def kill(self) -> None: ...

    def close(self) -> None: ...


class InProcess:
    """A backend called directly: fastest, but a hang cannot be interrupted (no deadline)."""

    def __init__(self, backend):
        self.backend = backend

    def start(self, timeout=None):
        return None

    def generate(self, batch, timeout=None):
        try:
            return self.backend.generate(batch)
        except Exception as e:  # a backend bug: errors for this batch, as the worker reports it
            raise BackendRaised(f"backend raised {type(e).__name__}: {e}") from e

    def kill(self):
        pass

    def close(self):
        self.backend.close()


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
    `groups` (from prefix_groups): without it, each run is taken as its own group."""
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
        chunks[g] = [rest[i : i + CHUNK_BATCHES] for i in range(0, len(rest), CHUNK_BATCHES)]
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
    started: float  # time of the first request (the budget's clock starts here)
    ended: float
    deadline: float | None
    deadline_hit: bool = False
    cancelled: list[str] = field(default_factory=list)  # in flight at the deadline
    not_started: list[str] = field(default_factory=list)
    restarts: int = 0
    crashes: list[str] = field(default_factory=list)
    batches: int = 0


class Scheduler:
    def __init__(self, executor: Executor, max_batch_size: int, max_restarts: int = 2):
        self.executor = executor
        self.max_batch_size = max_batch_size
        self.max_restarts = max_restarts

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
        t0 = time.time()
        deadline = t0 + budget_s if budget_s is not None else None
        report = ExecutionReport({}, t0, t0, deadline)
        if journal is not None:
            journal.mark("execute", started=t0, deadline=deadline, order=order, requests=len(requests))
        for n, batch in enumerate(batches):
            remaining = None if deadline is None else deadline - time.time()
            if remaining is not None and remaining <= 0:
                report.deadline_hit = True
                report.not_started = [r.id for b in batches[n:] for r in b]
                break
            try:
                out = self.executor.generate(batch, timeout=remaining)
            except WorkerTimeout:
                report.deadline_hit = True
                report.cancelled = [r.id for r in batch]
                report.not_started = [r.id for b in batches[n + 1 :] for r in b]
                break
            except BackendRaised as e:
                report.crashes.append(str(e))
                now = time.time()
                self._record(report, batch, [_failed(r, str(e), now) for r in batch], dupes, by_id, journal, on_batch)
                continue
            except WorkerCrashed as e:
                report.crashes.append(str(e))
                now = time.time()
                out = [_failed(r, f"backend crashed: {e}", now) for r in batch]
                self._record(report, batch, out, dupes, by_id, journal, on_batch)
                try:
                    restarted = self._restart(report, deadline)
                except WorkerTimeout:  # the restart itself ran into the deadline
                    report.deadline_hit, restarted = True, False
                if not restarted:
                    report.not_started = [r.id for b in batches[n + 1 :] for r in b]
                    break
                continue
            if len(out) != len(batch):
                raise RuntimeError(f"backend returned {len(out)} results for a batch of {len(batch)}")
            self._record(report, batch, out, dupes, by_id, journal, on_batch)
        report.ended = time.time()
        if journal is not None and report.deadline_hit:
            journal.mark("deadline", at=report.ended, cancelled=len(report.cancelled), not_started=len(report.not_started))
        return report

    def _restart(self, report: ExecutionReport, deadline: float | None) -> bool:
        if report.restarts >= self.max_restarts or (deadline is not None and time.time() >= deadline):
            return False
        report.restarts += 1
        self.executor.kill()
        self.executor.start(timeout=None if deadline is None else deadline - time.time())
        return True

    def _record(self, report, batch, out, dupes, by_id, journal, on_batch) -> None:
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

"""The scheduler's own cost: per request with an instant backend, and the journal's share of
throughput on the ~100M model (target: under 2%). Interleaved rounds, so noise hits both sides.

Run: make bench   (or .venv/bin/pytest bench -k overhead --benchmark-only -s)
"""

from __future__ import annotations

import statistics
import time

from effbench.contracts import GenerationRequest, GenerationResult, Origin, Timings
from effbench.execute.executor import InProcess
from effbench.execute.journal import Journal
from effbench.execute.order import plan_batches
from effbench.execute.scheduler import Scheduler


class InstantBackend:
    """Answers at once: what is left of a run's time is the scheduler's own."""

    name = "instant"

    def generate(self, batch):
        now = time.time()
        return [GenerationResult(r.id, (), 100, 1, Timings(now, now, now, now)) for r in batch]

    def close(self):
        pass


def _requests(n: int, runs: int = 20, max_tokens: int = 1) -> list[GenerationRequest]:
    return [GenerationRequest(id=f"run{i % runs}#{i}", prompt=f"question {i} " * (i % 13 + 1), max_tokens=max_tokens,
                              origin=Origin(run=f"run{i % runs}", index=i)) for i in range(n)]


def test_scheduler_overhead_per_request(benchmark, tmp_path):
    reqs = _requests(8000)
    lengths = {r.id: len(r.prompt) // 4 for r in reqs}
    sched = Scheduler(InProcess(InstantBackend()), 32)

    def run_once():
        journal = Journal(tmp_path / "j.jsonl", {"plan_digest": "bench"})
        sched.execute(reqs, lengths, order="effbench", journal=journal)
        journal.close()

    benchmark.pedantic(run_once, rounds=5, warmup_rounds=1)
    per_request_us = benchmark.stats.stats.median / len(reqs) * 1e6
    t0 = time.perf_counter()
    plan_batches(reqs, lengths, 32, "effbench")
    plan_us = (time.perf_counter() - t0) / len(reqs) * 1e6
    benchmark.extra_info.update(requests=len(reqs), per_request_us=round(per_request_us, 2), planning_us=round(plan_us, 2))
    print(f"\nscheduler overhead: {per_request_us:.1f} us per request (of which planning {plan_us:.1f} us), journal included")
    assert per_request_us < 1000  # sanity: far below any model's time per request


def test_journal_share_of_throughput(benchmark, m100_backend, tmp_path):
    reqs = _requests(32, runs=4, max_tokens=16)
    lengths = {r.id: len(m100_backend.tokenize(r.prompt)) for r in reqs}
    sched = Scheduler(InProcess(m100_backend), 8)
    with_j, without_j = [], []

    def one_round():
        t0 = time.perf_counter()
        sched.execute(reqs, lengths, order="effbench")
        t1 = time.perf_counter()
        journal = Journal(tmp_path / "j.jsonl", {"plan_digest": "bench"})
        sched.execute(reqs, lengths, order="effbench", journal=journal)
        journal.close()
        t2 = time.perf_counter()
        without_j.append(t1 - t0)
        with_j.append(t2 - t1)

    benchmark.pedantic(one_round, rounds=5, warmup_rounds=1)
    share = statistics.median(with_j) / statistics.median(without_j) - 1
    # the journal's own work, timed alone: write + flush of the same results
    res = sched.execute(reqs, lengths, order="effbench").results
    journal = Journal(tmp_path / "j2.jsonl", {"plan_digest": "bench"})
    t0 = time.perf_counter()
    for i in range(0, len(reqs), 8):
        journal.append([res[r.id] for r in reqs[i : i + 8]])
    direct = time.perf_counter() - t0
    journal.close()
    direct_share = direct / statistics.median(without_j)
    benchmark.extra_info.update(journal_share_end_to_end=round(share, 4), journal_share_direct=round(direct_share, 5))
    print(f"\njournal: {share * 100:+.2f}% end to end (noise-level), {direct_share * 100:.3f}% timed directly")
    assert direct_share < 0.02

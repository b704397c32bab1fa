"""The first scheduler's batching, on plain requests (no model needed)."""

from __future__ import annotations

from effbench.contracts import GenerationRequest
from effbench.scheduler import Scheduler, plan_batches


def test_batches_respect_max_size_and_group_by_max_tokens():
    reqs = [GenerationRequest(id=str(i), prompt="x" * i, max_tokens=1 if i % 3 else 50) for i in range(20)]
    lengths = [i for i in range(20)]
    batches = plan_batches(reqs, lengths, max_batch_size=4)
    assert sorted(r.id for b in batches for r in b) == sorted(r.id for r in reqs)
    for b in batches:
        assert len(b) <= 4
        assert len({r.max_tokens for r in b}) == 1
        ls = [len(r.prompt) for r in b]
        assert ls == sorted(ls, reverse=True)  # similar lengths side by side, longest first
    assert batches[0][0].max_tokens == 50


def test_scheduler_runs_every_request_through_the_backend(hf_backend):
    reqs = [GenerationRequest(id=f"r{i}", prompt="one two " * (i + 1), max_tokens=2) for i in range(10)]
    seen = []
    results = Scheduler(hf_backend, max_batch_size=4).execute(reqs, on_batch=lambda b, r: seen.append(len(b)))
    assert set(results) == {r.id for r in reqs}
    assert seen == [4, 4, 2]
    assert all(r.ok and r.batch_size <= 4 for r in results.values())
    assert all(r.timings.queued <= r.timings.started <= r.timings.finished for r in results.values())

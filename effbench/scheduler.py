"""The first scheduler: every request is known up front, so sort and batch them globally.

Requests are grouped by max_tokens (a batch decodes as long as its longest row), sorted by prompt
length within a group (less padding), and cut into batches of at most `max_batch_size`. Results
come back per batch through a callback, so progress and profiling see them as they land.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable, Sequence

from effbench.contracts import Backend, GenerationRequest, GenerationResult

BatchCallback = Callable[[list[GenerationRequest], list[GenerationResult]], None]


def plan_batches(
    requests: Sequence[GenerationRequest], prompt_tokens: Sequence[int], max_batch_size: int
) -> list[list[GenerationRequest]]:
    """Batches of similar length. Batches with the same max_tokens and the longest prompts go
    first, so the biggest memory use shows up at the start, not after hours."""
    order = sorted(range(len(requests)), key=lambda i: (-requests[i].max_tokens, -prompt_tokens[i], i))
    batches: list[list[GenerationRequest]] = []
    current: list[GenerationRequest] = []
    for i in order:
        r = requests[i]
        if current and (len(current) >= max_batch_size or current[0].max_tokens != r.max_tokens):
            batches.append(current)
            current = []
        current.append(r)
    if current:
        batches.append(current)
    return batches


class Scheduler:
    def __init__(self, backend: Backend, max_batch_size: int | None = None):
        self.backend = backend
        self.max_batch_size = max_batch_size or backend.capabilities.max_batch_size

    def execute(self, requests: Sequence[GenerationRequest], on_batch: BatchCallback | None = None) -> dict[str, GenerationResult]:
        queued = time.time()
        lengths = [len(self.backend.tokenize(r.prompt)) for r in requests]
        results: dict[str, GenerationResult] = {}
        for batch in plan_batches(requests, lengths, self.max_batch_size):
            out = self.backend.generate(batch)
            if len(out) != len(batch):
                raise RuntimeError(f"backend {self.backend.name} returned {len(out)} results for a batch of {len(batch)}")
            out = [replace(res, timings=replace(res.timings, queued=queued)) for res in out]
            for res in out:
                results[res.request_id] = res
            if on_batch is not None:
                on_batch(batch, out)
        return results

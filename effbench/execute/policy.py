"""What to do when a backend raises on a batch: one policy for the scheduler (`effbench run`) and
the HTTP server (`effbench serve`).

generate() reports a request it cannot run as data (an error result); raising, or answering with
results that do not match the batch, is a bug that one request may trigger (or a batch too big
for memory). The batch is run again in halves, recursively, down to single requests: only a
request that raises alone fails, its batch-mates are answered, in about 2*log2(batch) calls.
Anything else the call raises (the worker died, the deadline, a stop) is not the batch's fault:
it propagates, with every part settled so far already handed to `settle`.
"""

from __future__ import annotations

from typing import Callable, Sequence

from effbench.contracts import GenerationRequest, GenerationResult
from effbench.execute.worker import BackendRaised

Generate = Callable[[list[GenerationRequest]], Sequence[GenerationResult]]
Settle = Callable[[list[GenerationRequest], list["GenerationResult | BackendRaised"]], None]


def checked(batch: Sequence[GenerationRequest], results: Sequence[GenerationResult]) -> list[GenerationResult]:
    """The results if they answer the batch one for one, in order; BackendRaised otherwise."""
    if [r.request_id for r in results] != [r.id for r in batch]:
        raise BackendRaised(f"backend returned {len(results)} results for a batch of {len(batch)}"
                            + ("" if len(results) != len(batch) else ", not in the batch's order"))
    return list(results)


def isolate(generate: Generate, batch: list[GenerationRequest], settle: Settle,
            on_raised: Callable[[list[GenerationRequest], BackendRaised], None] = lambda batch, e: None) -> None:
    """Run `batch`; `generate` raises BackendRaised for the backend's failure. Each part that
    comes back is handed to `settle` in batch order, with its results, or for a single request
    that raised, [the BackendRaised]. `on_raised` sees every call that raised."""
    try:
        results = checked(batch, generate(batch))
    except BackendRaised as e:
        on_raised(batch, e)
        if len(batch) == 1:
            settle(batch, [e])
            return
        half = len(batch) // 2
        isolate(generate, batch[:half], settle, on_raised)
        isolate(generate, batch[half:], settle, on_raised)
        return
    settle(batch, results)

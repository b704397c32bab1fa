"""How the HF backend's decode loop (effbench/backends/hf.py) picks each row's next token: greedy
argmax, or temperature + top-p sampling with a generator of the row's own, seeded from the
request's seed and the completion's number, so that a sampled completion depends on (seed, k)
and not on which requests share its batch.
"""

from __future__ import annotations

import random
from typing import Sequence

import torch

from effbench.contracts import GenerationRequest


def row_generators(reqs: Sequence[GenerationRequest], device: str) -> list[torch.Generator | None]:
    """One per completion row, in row order (request by request, then completion k): None for a
    greedy request's rows."""
    return [_generator(req, k, device) for req in reqs for k in range(req.num_completions)]


def _generator(req: GenerationRequest, k: int, device: str) -> torch.Generator | None:
    if req.greedy:
        return None
    g = torch.Generator(device=device)
    seed = req.seed if req.seed is not None else random.SystemRandom().randrange(2**31)
    g.manual_seed(seed * 1009 + k)
    return g


def choose(logits: torch.Tensor, reqs: list[GenerationRequest], gens: list[torch.Generator | None]) -> torch.Tensor:
    """The next token of each active row ([A] from `logits` [A, V]; reqs[a] and gens[a] are row
    a's): greedy argmax for greedy rows; temperature + top-p sampling with the row's generator."""
    greedy = logits.argmax(dim=-1)  # [A]
    if all(r.greedy for r in reqs):
        return greedy
    out = greedy.clone()
    for a, (req, gen) in enumerate(zip(reqs, gens)):
        if req.greedy:
            continue
        probs = torch.softmax(logits[a].float() / req.temperature, dim=-1)
        if req.top_p < 1.0:
            sp, si = probs.sort(descending=True)
            cut = sp.cumsum(0) - sp > req.top_p  # keep the smallest prefix whose mass reaches top_p
            sp[cut] = 0.0
            probs = torch.zeros_like(probs).scatter_(0, si, sp)
        out[a] = torch.multinomial(probs, 1, generator=gen)[0]
    return out

"""What the HF backend's decode loop (effbench/backends/hf.py) turns its numbers into, kept out of
the loop itself: the text of a top-k alternative's token (cached per id), the check of a row's
tail for a stop sequence, the prompt's logprobs for echo, and the batch's GenerationResults.
The stop cut and each completion's per-token texts are every backend's (effbench/backends/common.py).
"""

from __future__ import annotations

from typing import Sequence

import torch

from effbench.backends.common import completion, token_texts
from effbench.contracts import Completion, GenerationRequest, GenerationResult, Timings, TokenLogprob


class Pieces:
    """Token id -> its text alone, as a top-k alternative shows it; decoded once per id."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._cache: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        piece = self._cache.get(token_id)
        if piece is None:
            piece = self._cache[token_id] = self.tokenizer.decode([token_id])
        return piece


def hit_stop(tokenizer, ids: list[int], stops: Sequence[str]) -> bool:
    """Whether the row's text so far holds one of `stops`. A stop string of n characters spans at
    most 4n byte-level tokens: only that tail is decoded."""
    window = 4 * max(len(s) for s in stops) + 4
    tail = tokenizer.decode(ids[-window:], skip_special_tokens=True)
    return any(s in tail for s in stops)


def prompt_logprobs(tokenizer, reqs: Sequence[GenerationRequest], encoded: list[list[int]], input_ids: torch.Tensor,
                    logits: torch.Tensor, L: int) -> list[list[TokenLogprob] | None]:
    """Logprob of each prompt token given the ones before it (echo_prompt), from the prefill's
    logits at every position ([B, L, V]) of the left-padded prompts `input_ids` ([B, L])."""
    lps = torch.log_softmax(logits[:, :-1, :].float(), dim=-1)  # [B, L-1, V]: predicts position t+1
    nxt = lps.gather(2, input_ids[:, 1:, None])[..., 0]  # [B, L-1]
    special = set(tokenizer.all_special_ids)
    out: list[list[TokenLogprob] | None] = []
    for b, (req, ids) in enumerate(zip(reqs, encoded)):
        if not req.echo_prompt:
            out.append(None)
            continue
        start = L - len(ids)
        row = nxt[b, start:].tolist()  # logprob of ids[1:], conditioned on what precedes
        body = [(j, t) for j, t in enumerate(ids) if t not in special]
        texts = token_texts(tokenizer, [t for _, t in body])
        out.append([TokenLogprob(text, row[j - 1] if j > 0 else 0.0, (), t) for (j, t), text in zip(body, texts)])
    return out


def batch_results(tokenizer, reqs: Sequence[GenerationRequest], encoded: list[list[int]], prompt_computed: list[int],
                  row_req: list[int], tok_ids: list[list[int]], tok_lps: list[list[float]],
                  tok_tops: list[list[tuple[tuple[str, float], ...]]], finish: list[str],
                  prompt_lps: list[list[TokenLogprob] | None], timings: Timings, bid: int, bsize: int) -> list[GenerationResult]:
    """One GenerationResult per request from the loop's rows (row r is a completion of request
    row_req[r]); `prompt_computed`: each request's prompt tokens run through the model (the rest
    came from the prefix cache)."""
    by_req: list[list[Completion]] = [[] for _ in reqs]
    for r, b in enumerate(row_req):
        by_req[b].append(completion(tokenizer, reqs[b], tok_ids[r], tok_lps[r], tok_tops[r], finish[r], prompt_lps[b]))
    results = []
    for b, req in enumerate(reqs):
        out_toks = sum(len(tok_ids[r]) for r, rb in enumerate(row_req) if rb == b)
        kept = sum(len(c.tokens) for c in by_req[b]) - (len(prompt_lps[b]) * req.num_completions if req.echo_prompt else 0)
        results.append(
            GenerationResult(
                request_id=req.id,
                completions=tuple(by_req[b]),
                prompt_tokens=len(encoded[b]),
                output_tokens=kept,
                timings=timings,
                batch_id=bid,
                batch_size=bsize,
                computed_tokens=prompt_computed[b] + out_toks,
                cached_tokens=len(encoded[b]) - prompt_computed[b],
            )
        )
    return results

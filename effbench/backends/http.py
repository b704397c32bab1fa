"""HTTP backend: evaluates any server speaking the challenge's API (`/process`, `/tokenize`,
`/decode`; README, "The challenge's HTTP API, both ways"), e.g. a participant's existing container or `effbench serve`.

Each request of a batch is one POST, sent concurrently like HELM's `-n` (the batch size is the
concurrency). A request is sent the fields HELM's HTTPModelClient sends. Connection failures and
5xx and 429 answers are retried a bounded number of times (a 429 after its Retry-After); another 4xx is the request's error (as data). One
completion per POST, as the challenge's servers return one: n completions are n POSTs. The
deadline is enforced around this backend by effbench's worker process, which is killed with its
open connections when time is up.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import httpx

from effbench.backends.common import cut_at_stop, request_problem
from effbench.backends.options import HTTPOptions
from effbench.contracts import (
    BackendCapabilities,
    Completion,
    EffbenchError,
    GenerationRequest,
    GenerationResult,
    Timings,
    TokenLogprob,
)
from effbench.submission import Submission


class HTTPBackend:
    name = "http"

    def __init__(self, submission: Submission, *, cache_dir: Path | None = None, **options):
        """`options`: the fields of HTTPOptions, checked when the manifest was read (effbench/submission.py)."""
        o = self.options = HTTPOptions(**options)
        if not submission.manifest.endpoint:
            raise EffbenchError(f"{submission.manifest_path}: field 'endpoint': the http backend needs the server's URL")
        self.submission = submission
        self.endpoint = submission.manifest.endpoint.rstrip("/")
        self.timeout_s = o.timeout_s
        self.retries = o.retries
        self.concurrency = o.concurrency or submission.manifest.limits.max_batch_size
        self.client: httpx.Client | None = None
        self.model_dir = Path(self.endpoint)
        self.merged_now = False
        self.merge_seconds = 0.0
        self.load_seconds = 0.0
        self.device = "remote"
        self._batches = 0

    @property
    def capabilities(self) -> BackendCapabilities:
        lim = self.submission.manifest.limits
        return BackendCapabilities(max_batch_size=lim.max_batch_size, max_sequence_length=lim.max_sequence_length,
                                   top_logprobs=20)  # vocab_size unknown: the server checks its own ids

    def start(self) -> None:
        t0 = time.perf_counter()
        self.client = httpx.Client(timeout=self.timeout_s, limits=httpx.Limits(max_connections=self.concurrency))
        try:
            self.tokenize("ping")
        except (httpx.HTTPError, EffbenchError) as e:
            raise EffbenchError(f"{self.submission.manifest_path}: field 'endpoint': {self.endpoint} does not answer"
                                f" /tokenize ({type(e).__name__}: {e})") from None
        self.load_seconds = time.perf_counter() - t0

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        self.client = None

    def _post(self, path: str, body: dict) -> dict:
        """POST with bounded retries on connection errors, 5xx and 429 (a full queue: after the
        server's Retry-After, at most MAX_RETRY_AFTER_S); any other 4xx raises at once."""
        for attempt in range(self.retries + 1):
            try:
                r = self.client.post(f"{self.endpoint}{path}", json=body)
            except httpx.TransportError:
                if attempt == self.retries:
                    raise
                time.sleep(0.2 * 2**attempt)
                continue
            if (r.status_code >= 500 or r.status_code == 429) and attempt < self.retries:
                time.sleep(_retry_after(r, 0.2 * 2**attempt))
                continue
            r.raise_for_status()
            return r.json()
        raise AssertionError("unreachable")

    def tokenize(self, text: str) -> list[int]:
        return self._post("/tokenize", {"text": text, "truncation": False})["tokens"]

    def decode(self, ids: Sequence[int]) -> str:
        return self._post("/decode", {"tokens": list(ids)})["text"]

    def generate(self, batch: Sequence[GenerationRequest]) -> list[GenerationResult]:
        if self.client is None:
            raise RuntimeError("HTTPBackend.generate() before start()")
        queued = time.time()
        self._batches += 1
        bid = self._batches
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(batch)))) as pool:
            return list(pool.map(lambda r: self._one(r, queued, bid, len(batch)), batch))

    def _one(self, req: GenerationRequest, queued: float, bid: int, bsize: int) -> GenerationResult:
        started = time.time()
        try:
            prompt_len = len(self.tokenize(req.prompt))
            problem = request_problem(req, prompt_len, self.capabilities.max_sequence_length)
            if problem is not None:
                return GenerationResult(req.id, (), prompt_len, 0, Timings(queued, started, None, time.time()), bid, bsize, 0, problem)
            comps = [self._completion(req, k) for k in range(req.num_completions)]
        except httpx.HTTPStatusError as e:
            return GenerationResult(req.id, (), 0, 0, Timings(queued, started, None, time.time()), bid, bsize, 0,
                                    f"server answered {e.response.status_code}: {e.response.text[:300]}")
        except httpx.HTTPError as e:
            return GenerationResult(req.id, (), 0, 0, Timings(queued, started, None, time.time()), bid, bsize, 0,
                                    f"{type(e).__name__} talking to {self.endpoint}: {e}")
        out = sum(len(c.tokens) for c in comps)
        echo = len(self.tokenize(req.prompt)) if req.echo_prompt else 0  # echoed prompt tokens are not output
        return GenerationResult(req.id, tuple(comps), prompt_len, max(out - echo * len(comps), 0),
                                Timings(queued, started, None, time.time()), bid, bsize, prompt_len + out)

    def _completion(self, req: GenerationRequest, k: int) -> Completion:
        body = {
            "prompt": req.prompt,
            "temperature": 1e-7 if req.greedy else req.temperature,  # what HELM's client sends for greedy
            "num_return_sequences": 1,
            "max_new_tokens": req.max_tokens,
            "top_p": req.top_p,
            "echo_prompt": req.echo_prompt,
            "top_k_per_token": req.top_k_per_token,
            "stop_sequences": list(req.stop_sequences),
        }
        if req.seed is not None:
            body["seed"] = req.seed + k
        data = self._post("/process", body)
        tokens = [TokenLogprob(t["text"], float(t["logprob"]), tuple((a, float(b)) for a, b in (t.get("top_logprob") or {}).items()))
                  for t in data["tokens"]]
        if req.echo_prompt or not req.stop_sequences:  # an echo's text holds the prompt: cut nothing
            return Completion(data["text"], tuple(tokens), "length")
        kept, text, reason = cut_at_stop(tokens, data["text"], req.stop_sequences, "length")  # in case the server did not
        return Completion(text, tuple(kept), reason)


MAX_RETRY_AFTER_S = 30.0


def _retry_after(r: httpx.Response, default: float) -> float:
    """Seconds to wait before retrying: the server's Retry-After (seconds form) when it gives one."""
    value = r.headers.get("retry-after", "")
    return min(float(value), MAX_RETRY_AFTER_S) if value.strip().isdigit() else default

"""`effbench serve`: a submission's backend behind the NeurIPS 2023 LLM Efficiency Challenge's HTTP
API (POST /process, /tokenize, /decode; docs/CHALLENGE.md, "The submission interface"), so that
HELM's HTTPModelClient, or any client, can query it. Unlike the challenge's sample servers, which
ran one request at a time, concurrent requests are gathered into batches.

Field mapping of POST /process (both the sample servers' names and what HELM sends):
  prompt -> prompt;  num_samples | num_return_sequences (1) -> num_completions;
  max_new_tokens (50) -> max_tokens;  temperature (0.8; HELM sends 1e-7 for greedy) -> temperature;
  top_p (1.0) -> top_p;  seed -> seed;  echo_prompt (false) -> echo_prompt;
  top_k_per_token (1) -> top_k_per_token;  stop_sequences ([]) -> stop_sequences (the backend
  cuts the text just before the first one, as HELM expects of the server);
  top_k (the sample servers' sampling top-k): accepted and IGNORED, GenerationRequest has no
  sampling top-k. Unknown fields are ignored, as the sample servers' pydantic models did.
The response describes the first completion only (HELM reads one): text, tokens [{text, logprob,
top_logprob}], logprob (sum over the returned tokens, prompt tokens included when echoed) and
request_time (seconds from the request's arrival to its answer, queueing included).

Batching: a request waits in a queue; the batcher takes the first one, waits up to `window_s`
from its arrival for others (up to `max_batch` requests), then runs the batch in the one worker
thread that owns the backend (backends are not thread-safe: one batch at a time; /tokenize and
/decode run on that thread too). Requests that arrive while a batch runs form the next batch at
once, since their window has passed. If `generate` raises for a batch, the batch is split in
halves and each half re-run (recursively), so one poisonous request fails (500) without failing
its batch-mates, in about 2*log2(batch) calls rather than one per request.

Under pressure: at most `max_queue` requests wait (a new one past that gets 429 with Retry-After,
not queued); a request without its answer after `request_timeout_s` (queueing included) gets 504,
while its batch may still run on the backend's thread; /health says "degraded" while a batch has
run longer than that. Status codes say whose fault: a GenerationResult's `error` is the request's
(the Backend contract: generate() reports a request it cannot run as data, e.g. request_problem's
"prompt too long for the window") -> 400; generate() raising, no completion, a timeout -> 5xx.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from effbench.contracts import Backend, EffbenchError, GenerationRequest, GenerationResult
from effbench.execute.policy import isolate
from effbench.execute.scheduler import InProcess
from effbench.execute.worker import BackendRaised

try:
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field, model_validator
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as e:  # pragma: no cover - exercised only on an install without them
    raise EffbenchError(f"effbench serve needs fastapi and uvicorn: pip install -c constraints.txt fastapi uvicorn ({e})") from None

log = logging.getLogger("effbench.serve")

DEFAULT_WINDOW_S = 0.005
DEFAULT_REQUEST_TIMEOUT_S = 600.0  # generous: a long generation on a slow card is not a hang
MIN_DEFAULT_MAX_QUEUE = 64  # so that HELM's -n 30 against --one-at-a-time (max_batch 1) never sees a 429
DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB: 2048 tokens of prompt are ~10 KB; HELM's largest prompts fit easily
MAX_COMPLETIONS = 64  # per request; each completion is a batch row
_DRAIN_FACTOR = 8  # an oversized body up to this many times the limit is read (and dropped) before the 413


# ---- the API's bodies ----------------------------------------------------------------------------
class ProcessRequest(BaseModel):
    """POST /process: the sample servers' fields and HELM HTTPModelClient's, in one model."""

    model_config = ConfigDict(extra="ignore")

    prompt: str
    num_samples: int | None = Field(None, ge=1, le=MAX_COMPLETIONS, description="Sample servers' name for num_return_sequences.")
    num_return_sequences: int | None = Field(None, ge=1, le=MAX_COMPLETIONS, description="HELM's name; default 1.")
    max_new_tokens: int = Field(50, ge=0)
    top_k: int | None = Field(None, description="Sampling top-k of the sample servers: accepted, ignored.")
    temperature: float = Field(0.8, ge=0, allow_inf_nan=False, description="<= 1e-4 is greedy (HELM sends 1e-7).")
    top_p: float = Field(1.0, gt=0, le=1, allow_inf_nan=False)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    echo_prompt: bool | None = None
    top_k_per_token: int = Field(1, ge=1)
    stop_sequences: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_count(self) -> ProcessRequest:
        a, b = self.num_samples, self.num_return_sequences
        if a is not None and b is not None and a != b:
            raise ValueError(f"num_samples={a} and num_return_sequences={b} disagree; give one of them")
        return self

    def to_generation_request(self, request_id: str) -> GenerationRequest:
        return GenerationRequest(
            id=request_id,
            prompt=self.prompt,
            max_tokens=self.max_new_tokens,
            stop_sequences=tuple(s for s in self.stop_sequences if s),  # an empty stop string means nothing
            temperature=self.temperature,
            top_p=self.top_p,
            num_completions=self.num_return_sequences or self.num_samples or 1,
            top_k_per_token=self.top_k_per_token,
            echo_prompt=bool(self.echo_prompt),
            seed=self.seed,
        )


class TokenOut(BaseModel):
    text: str
    logprob: float
    top_logprob: dict[str, float]


class ProcessResponse(BaseModel):
    text: str
    tokens: list[TokenOut]
    logprob: float
    request_time: float


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text: str
    truncation: bool = True
    max_length: int = Field(2048, ge=1)


class TokenizeResponse(BaseModel):
    tokens: list[int]
    request_time: float


class DecodeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    tokens: list[int] = Field(..., description="Token ids, each in [0, the tokenizer's size).")


class DecodeResponse(BaseModel):
    text: str
    request_time: float


# ---- batching ------------------------------------------------------------------------------------
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


# ---- the app -------------------------------------------------------------------------------------
class BodyLimit:
    """ASGI middleware: 413 for a body over `max_bytes` (by Content-Length, or counted when chunked)."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                return await _send_json(send, 400, {"error": "invalid Content-Length header"})
            if n <= self.max_bytes:
                return await self.app(scope, receive, send)
            if n <= self.max_bytes * _DRAIN_FACTOR:  # read it first, so that the client sees the answer
                await _drain(receive, None)
            return await _send_json(send, 413, {"error": f"request body of {n} bytes exceeds the limit of {self.max_bytes} bytes"}, close=True)
        # No Content-Length (chunked): buffer up to the limit, then replay it to the app.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                if more:
                    await _drain(receive, self.max_bytes * _DRAIN_FACTOR - size)
                return await _send_json(send, 413, {"error": f"request body exceeds the limit of {self.max_bytes} bytes"}, close=True)
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


async def _drain(receive, limit: int | None) -> None:
    read = 0
    while limit is None or read <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return
        read += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _send_json(send, status: int, content: dict, close: bool = False) -> None:
    response = JSONResponse(content, status_code=status, headers={"connection": "close"} if close else None)
    await send({"type": "http.response.start", "status": status, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


def _top_logprob(pairs: Sequence[tuple[str, float]]) -> dict[str, float]:
    """Best first; when two pieces share a text (byte pieces), the first (best) one stays."""
    out: dict[str, float] = {}
    for text, lp in pairs:
        out.setdefault(text, lp)
    return out


def _not_unicode(field_name: str, text: str) -> str | None:
    """Why `text` cannot be encoded as UTF-8 (JSON can carry a lone surrogate such as "\\ud800",
    which no tokenizer accepts), or None. Checked before a request is queued: found later, it
    would raise inside the backend and cost its batch-mates a re-run."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"{field_name}: character {e.start} is a lone surrogate (U+{ord(text[e.start]):04X}), not valid Unicode text"
    return None


def _validation_message(errors: Sequence[dict]) -> str:
    parts = []
    for err in errors:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
        parts.append(f"{loc}: {err.get('msg', '')}" if loc else str(err.get("msg", "")))
    return "; ".join(parts) or "invalid request"


def create_app(
    backend: Backend,
    *,
    max_batch: int | None = None,
    window_s: float = DEFAULT_WINDOW_S,
    one_at_a_time: bool = False,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    model_name: str | None = None,
    max_queue: int | None = None,
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
) -> FastAPI:
    """The API over a started backend. `one_at_a_time`: batches of one, no gathering (the
    challenge's sample servers); otherwise up to `max_batch` requests (default: the backend's
    capabilities.max_batch_size) gathered for up to `window_s` seconds. At most `max_queue`
    requests wait (default: 4 batches, at least 64); each gets its answer within `request_timeout_s` or a 504."""
    caps = backend.capabilities
    if one_at_a_time:
        max_batch, window_s = 1, 0.0
    max_batch = caps.max_batch_size if max_batch is None else max_batch
    if not 1 <= max_batch <= caps.max_batch_size:
        raise EffbenchError(f"--max-batch: {max_batch} is not in 1..{caps.max_batch_size} (the submission's limits.max_batch_size)")
    if not (window_s >= 0 and math.isfinite(window_s)):
        raise EffbenchError(f"--batch-window-ms: {window_s * 1000:g} is not a duration >= 0")
    max_queue = max(4 * max_batch, MIN_DEFAULT_MAX_QUEUE) if max_queue is None else max_queue
    if max_queue < 1:
        raise EffbenchError(f"--max-queue: {max_queue} is not a count >= 1")
    if not (request_timeout_s > 0 and math.isfinite(request_timeout_s)):
        raise EffbenchError(f"--request-timeout: {request_timeout_s:g} is not a duration > 0 (seconds)")
    if model_name is None:
        submission = getattr(backend, "submission", None)
        model_name = getattr(submission, "name", None) or backend.name
    batcher = Batcher(backend, max_batch, window_s, max_queue, request_timeout_s)

    async def lifespan(_app: FastAPI):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(
        title=f"effbench serve: {model_name}",
        description="The NeurIPS 2023 LLM Efficiency Challenge's submission API, with batching.",
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    app.state.stats = batcher.stats
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))} for e in exc.errors()]
        message = _validation_message(errors)
        if "json" not in request.headers.get("content-type", ""):  # e.g. curl -d without -H: FastAPI did not parse it
            message = f"send a JSON object with Content-Type: application/json ({message})"
        return JSONResponse({"error": message, "detail": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        running = batcher.running_s()
        return {
            # degraded: the batch in the backend has outrun the request timeout (hung, or far too slow)
            "status": "degraded" if running is not None and running > request_timeout_s else "ok",
            "batch_running_s": None if running is None else round(running, 3),
            "model": model_name,
            "backend": backend.name,
            "max_batch": max_batch,
            "batch_window_ms": window_s * 1000,
            "one_at_a_time": one_at_a_time,
            "max_queue": max_queue,
            "request_timeout_s": request_timeout_s,
            "prefix_reuse": getattr(backend, "prefix_reuse", None),
            "max_sequence_length": caps.max_sequence_length,
            "queued": batcher.queued,
            "busy": batcher.busy,
            "stats": batcher.stats.as_dict(),
        }

    @app.post("/process", response_model=ProcessResponse)
    async def process(body: ProcessRequest) -> dict[str, Any]:
        t0 = time.perf_counter()
        if body.top_k_per_token > 1 and (not caps.logprobs or body.top_k_per_token > caps.top_logprobs):
            raise HTTPException(400, f"top_k_per_token={body.top_k_per_token}: this backend gives at most {caps.top_logprobs if caps.logprobs else 1}")
        if body.echo_prompt and not caps.echo:
            raise HTTPException(400, "echo_prompt: this backend cannot echo the prompt")
        texts = [("prompt", body.prompt)] + [(f"stop_sequences[{i}]", s) for i, s in enumerate(body.stop_sequences)]
        for problem in (_not_unicode(name, text) for name, text in texts):
            if problem is not None:
                raise HTTPException(400, problem)
        try:
            result = await batcher.submit(body.to_generation_request(batcher.next_id()))
        except QueueFull as e:
            raise HTTPException(429, str(e), headers={"Retry-After": str(e.retry_after_s)}) from None
        except RequestTimeout as e:
            raise HTTPException(504, str(e)) from None
        except BackendFailure as e:
            raise HTTPException(500, str(e)) from None
        if result.error is not None:  # the backend cannot run this request (e.g. too long for the window)
            raise HTTPException(400, result.error)
        if not result.completions:
            raise HTTPException(500, "backend returned no completion")
        c = result.completions[0]
        return {
            "text": c.text,
            "tokens": [{"text": t.text, "logprob": t.logprob, "top_logprob": _top_logprob(t.top_logprobs)} for t in c.tokens],
            "logprob": c.logprob,
            "request_time": time.perf_counter() - t0,
        }

    @app.post("/tokenize", response_model=TokenizeResponse)
    async def tokenize(body: TokenizeRequest) -> dict[str, Any]:
        t0 = time.perf_counter()
        problem = _not_unicode("text", body.text)
        if problem is not None:
            raise HTTPException(400, problem)
        try:
            tokens = await batcher.on_worker(backend.tokenize, body.text)
        except RequestTimeout as e:
            raise HTTPException(504, str(e)) from None
        if body.truncation:
            tokens = tokens[: body.max_length]
        return {"tokens": list(tokens), "request_time": time.perf_counter() - t0}

    @app.post("/decode", response_model=DecodeResponse)
    async def decode(body: DecodeRequest) -> dict[str, Any]:
        t0 = time.perf_counter()
        # The tokenizer's own size where the backend knows it: past it, a fast tokenizer decodes an
        # id to nothing (a silent "") and others raise; 2**31 bounds what a remote server is sent.
        limit = caps.vocab_size if caps.vocab_size is not None else 2**31
        bad = [t for t in body.tokens if not 0 <= t < limit]
        if bad:
            raise HTTPException(400, f"tokens: {bad[0]} is not a token id (ids are 0..{limit - 1})")
        try:
            text = await batcher.on_worker(backend.decode, body.tokens)
        except RequestTimeout as e:
            raise HTTPException(504, str(e)) from None
        except Exception as e:  # a tokenizer that refuses ids it has (e.g. a remote server's 4xx)
            raise HTTPException(400, f"tokens: cannot decode ({type(e).__name__}: {e})") from None
        return {"text": text, "request_time": time.perf_counter() - t0}

    return app


# ---- the command ---------------------------------------------------------------------------------
def _bind(host: str, port: int):
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise EffbenchError(f"--host/--port: cannot listen on {host}:{port} ({e.strerror or e})") from None
    return sock


def serve(
    submission: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    max_batch: int | None = None,
    window_s: float = DEFAULT_WINDOW_S,
    one_at_a_time: bool = False,
    cache_dir: Path | None = None,
    backend: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    on_ready: Callable[[str], None] | None = None,
    trust: dict[str, bool] | None = None,
    max_queue: int | None = None,
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
) -> None:
    """Load the submission, start its backend, serve until interrupted (Ctrl-C), close the backend.
    `trust`: the command line's allow_pickle / trust_remote_code / allow_outside_paths."""
    import uvicorn

    from effbench.backends import make_backend
    from effbench.submission import Submission

    sub = Submission.load(submission, **(trust or {}))
    sub = sub.with_backend(backend) if backend else sub
    sock = _bind(host, port)  # before the (slow) model load: a taken port fails at once
    try:
        be = make_backend(sub, cache_dir=cache_dir)
        if one_at_a_time and getattr(be, "prefix_reuse", False):
            be.prefix_reuse = False  # the sample servers computed every prompt whole
        be.start()
        try:
            app = create_app(be, max_batch=max_batch, window_s=window_s, one_at_a_time=one_at_a_time,
                             max_body_bytes=max_body_bytes, model_name=sub.name, max_queue=max_queue,
                             request_timeout_s=request_timeout_s)
            if on_ready is not None:
                b = app.state.batcher
                on_ready(f"serving {sub.name} ({be.name}) on http://{host}:{port}: max batch {b.max_batch},"
                         f" window {b.window_s * 1000:g} ms, queue {b.max_queue}, request timeout {b.request_timeout_s:g} s;"
                         " POST /process /tokenize /decode, GET /health")
            uvicorn.Server(uvicorn.Config(app, log_level="info", timeout_keep_alive=30)).run(sockets=[sock])
        finally:
            be.close()
    finally:
        sock.close()


@contextlib.contextmanager
def serve_in_thread(app, host: str = "127.0.0.1"):
    """The app under uvicorn on a free port in a background thread (tests, benchmarks, embedding);
    yields its base URL once /health answers, and stops the server on exit."""
    import httpx
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    url = f"http://{host}:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"the server at {url} did not come up")
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()



def wait_until_serving(url: str, proc=None, timeout_s: float = 300.0) -> dict:
    """Poll GET /health until the server answers (its /health JSON); EffbenchError when `proc`
    (a subprocess.Popen of `effbench serve`) exits first or the timeout passes."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{url}/health", timeout=1)
            if r.status_code == 200:
                return r.json()
        except httpx.HTTPError:
            pass
        if proc is not None and proc.poll() is not None:
            raise EffbenchError(f"{url}: the server exited (code {proc.returncode}) before answering /health")
        time.sleep(0.5)
    raise EffbenchError(f"{url}: no answer on /health within {timeout_s:g} s")

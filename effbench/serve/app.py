"""The app of `effbench serve`: create_app puts a started backend behind the challenge's HTTP API
(POST /process, /tokenize, /decode, GET /health), with the request checks, the body-size limit
and the status codes. README, "The challenge's HTTP API, both ways".

Status codes say whose fault. The request's -> 4xx: a GenerationResult's `error` (the Backend
contract: generate() reports a request it cannot run as data, e.g. request_problem's "prompt too
long for the window"), a lone surrogate, a token id past the vocabulary: 400; a body that fails
validation: 422; one too big: 413; the queue full (QueueFull): 429 with Retry-After. The
server's -> 5xx: generate() raising even alone (BackendFailure) or no completion: 500; no answer
within the request timeout (RequestTimeout): 504. /health says "degraded" while a batch has run
longer than the request timeout.
"""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

from effbench.contracts import Backend, EffbenchError
from effbench.serve.api import DecodeRequest, DecodeResponse, ProcessRequest, ProcessResponse, TokenizeRequest, TokenizeResponse
from effbench.serve.batcher import BackendFailure, Batcher, QueueFull, RequestTimeout

try:
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as e:  # pragma: no cover - exercised only on an install without them
    raise EffbenchError(f"effbench serve needs fastapi and uvicorn: pip install -c constraints.txt fastapi uvicorn ({e})") from None

DEFAULT_WINDOW_S = 0.005
DEFAULT_REQUEST_TIMEOUT_S = 600.0  # generous: a long generation on a slow card is not a hang
MIN_DEFAULT_MAX_QUEUE = 64  # so that HELM's -n 30 against --one-at-a-time (max_batch 1) never sees a 429
DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB: 2048 tokens of prompt are ~10 KB; HELM's largest prompts fit easily
_DRAIN_FACTOR = 8  # an oversized body up to this many times the limit is read (and dropped) before the 413


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
    app.state.cpu_policy = None  # serve() records its threading policy here (effbench/execute/cpu.py)
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
            "cpu_policy": app.state.cpu_policy,
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

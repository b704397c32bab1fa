"""`effbench serve`: a submission's backend behind the NeurIPS 2023 LLM Efficiency Challenge's HTTP
API, so that HELM's HTTPModelClient, or any client, can query it. Unlike the challenge's sample
servers, which ran one request at a time, concurrent requests are gathered into batches. README,
"The challenge's HTTP API, both ways".

The package: api.py (the request and response bodies), batcher.py (batches, queue bound,
timeouts), app.py (create_app: the routes, checks and status codes); here, the command (serve)
and the helpers that run an app in a thread (tests, benchmarks) or wait for a server to answer.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path
from typing import Callable

from effbench.contracts import EffbenchError
from effbench.execute import cpu
from effbench.quiet import quiet_known_messages
from effbench.serve.app import DEFAULT_MAX_BODY_BYTES, DEFAULT_REQUEST_TIMEOUT_S, DEFAULT_WINDOW_S, create_app

__all__ = ["create_app", "serve", "serve_in_thread", "wait_until_serving"]


def _bind(host: str, port: int):
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
    chosen_by = cpu.set_wait_policy()  # the worker's policy (effbench/execute/cpu.py), before torch loads
    quiet_known_messages()
    blocked = cpu.block_second_runtimes(sub.tokenizer_dir)
    try:
        be = make_backend(sub, cache_dir=cache_dir)
        cpu.set_torch_threads()
        if one_at_a_time and getattr(be, "prefix_reuse", False):
            be.prefix_reuse = False  # the sample servers computed every prompt whole
        be.start()
        try:
            app = create_app(be, max_batch=max_batch, window_s=window_s, one_at_a_time=one_at_a_time,
                             max_body_bytes=max_body_bytes, model_name=sub.name, max_queue=max_queue,
                             request_timeout_s=request_timeout_s)
            app.state.cpu_policy = cpu.policy_report(chosen_by, blocked)
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

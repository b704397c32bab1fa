"""The backend in a child process, so that a backend that hangs or crashes cannot hold a run past
its deadline: the parent waits on a pipe with a timeout and kills the child when time is up.

Messages are effbench's own dataclasses over a multiprocessing pipe between effbench's own
processes (the submission's files are never unpickled). The child is spawned, not forked: a
forked copy of a process with torch threads running is not safe.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from effbench.contracts import BackendCapabilities, EffbenchError, GenerationRequest, GenerationResult
from effbench.submission import Submission


WARM_UP_ID = "warm-up"


class WorkerTimeout(Exception):
    """The batch did not come back before the deadline; the worker has been killed."""


class WorkerCrashed(Exception):
    """The worker process died (a crash, an OOM kill)."""


class BackendRaised(Exception):
    """The backend raised on a batch (a bug: generate() reports bad requests as data); the
    worker is alive and serves the next batch."""


@dataclass(frozen=True)
class WorkerInfo:
    name: str
    model_dir: str
    merged_now: bool
    device: str
    load_seconds: float  # merge + model load
    merge_seconds: float
    warm_up_seconds: float
    capabilities: BackendCapabilities


def _worker_main(conn, submission: Submission, cache_dir: Path | None) -> None:
    from effbench.backends import make_backend

    try:
        backend = make_backend(submission, cache_dir=cache_dir)
        backend.start()
        # Warm-up, outside any timing: the first forward pass pays one-off kernel and allocator set-up.
        t0 = time.perf_counter()
        backend.generate([GenerationRequest(id=WARM_UP_ID, prompt="warm up", max_tokens=2)])
        warm = time.perf_counter() - t0
        conn.send(("ready", WorkerInfo(
            backend.name, str(getattr(backend, "model_dir", "")), bool(getattr(backend, "merged_now", False)),
            str(getattr(backend, "device", "cpu")), float(getattr(backend, "load_seconds", 0.0)),
            float(getattr(backend, "merge_seconds", 0.0)), warm, backend.capabilities,
        )))
    except Exception as e:  # reported to the parent, which raises it there: nothing is swallowed
        conn.send(("error", f"{type(e).__name__}: {e}" if not isinstance(e, EffbenchError) else str(e), isinstance(e, EffbenchError)))
        return
    while True:
        msg = conn.recv()
        if msg[0] == "stats":  # the allocator's view, which only this process has
            conn.send(("stats", _allocator_stats()))
            continue
        if msg[0] == "close":
            backend.close()
            conn.send(("closed",))
            return
        try:
            conn.send(("results", backend.generate(msg[1])))
        except Exception as e:  # a backend bug: the parent turns it into errors for this batch
            conn.send(("error", f"backend raised {type(e).__name__}: {e}", False))


def _iomp_preload(submission: Submission) -> str | None:
    """vLLM on the CPU decodes ~1.5x faster with Intel's OpenMP preloaded (STACK-NOTES.md): the
    venv's libiomp5.so for a vllm worker, unless LD_PRELOAD is already set."""
    lib = Path(sys.prefix) / "lib" / "libiomp5.so"
    if submission.manifest.backend != "vllm" or os.environ.get("LD_PRELOAD") or not lib.is_file():
        return None
    return str(lib)


def _allocator_stats() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"source": "cpu"}
    return {"source": "torch.cuda", "max_allocated_bytes": int(torch.cuda.max_memory_allocated()),
            "max_reserved_bytes": int(torch.cuda.max_memory_reserved())}


class BackendWorker:
    """Parent-side handle of the worker process."""

    def __init__(self, submission: Submission, cache_dir: Path | None = None):
        self.submission = submission
        self.cache_dir = cache_dir
        self.info: WorkerInfo | None = None
        self._proc = None
        self._conn = None

    @property
    def name(self) -> str:
        return self.info.name if self.info else self.submission.manifest.backend

    def start(self, timeout: float | None = None) -> WorkerInfo:
        """Spawn the worker and wait until its model is loaded (WorkerTimeout past `timeout`)."""
        self.launch()
        return self.wait_ready(timeout)

    def launch(self) -> None:
        """Spawn the worker; it merges and loads the model while the caller does other work
        (HELM planning the suite): wait_ready() collects it."""
        ctx = mp.get_context("spawn")
        preload = _iomp_preload(self.submission)
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(target=_worker_main, args=(child, self.submission, self.cache_dir), daemon=True,
                                 name="effbench-backend")
        saved = os.environ.get("LD_PRELOAD")
        if preload:
            os.environ["LD_PRELOAD"] = preload  # read by the loader when the worker starts, not later
        try:
            self._proc.start()
        finally:
            if preload and saved is None:
                del os.environ["LD_PRELOAD"]
            elif preload:
                os.environ["LD_PRELOAD"] = saved
        child.close()
        self._conn = parent

    def wait_ready(self, timeout: float | None = None) -> WorkerInfo:
        msg = self._recv(timeout=timeout)
        if msg[0] == "error":
            self.kill()
            raise EffbenchError(msg[1]) if msg[2] else WorkerCrashed(f"backend failed to start: {msg[1]}")
        self.info = msg[1]
        return self.info

    def _recv(self, timeout: float | None):
        if timeout is not None and not self._conn.poll(max(timeout, 0.0)):
            self.kill()
            raise WorkerTimeout(f"no answer within {timeout:.1f} s")
        try:
            return self._conn.recv()
        except (EOFError, ConnectionResetError, OSError):
            code = self._proc.exitcode if self._proc is not None else None
            self.kill()
            raise WorkerCrashed(f"backend process died (exit code {code})") from None

    def generate(self, batch: Sequence[GenerationRequest], timeout: float | None = None) -> list[GenerationResult]:
        self._conn.send(("generate", list(batch)))
        msg = self._recv(timeout)
        if msg[0] == "error":
            raise BackendRaised(msg[1])
        return msg[1]

    def allocator_stats(self) -> dict:
        self._conn.send(("stats",))
        return self._recv(timeout=30)[1]

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def kill(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None

    def close(self, timeout: float = 30.0) -> None:
        if self.alive:
            try:
                self._conn.send(("close",))
                deadline = time.time() + timeout
                while self.alive and time.time() < deadline and not self._conn.poll(0.1):
                    pass
            except (BrokenPipeError, OSError):
                pass  # already gone: kill() below reaps it
        self.kill()

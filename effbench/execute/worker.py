"""The backend in a child process, so that a backend that hangs or crashes cannot hold a run past
its deadline: the parent waits on a pipe with a timeout and kills the child when time is up.

Messages are effbench's own dataclasses over a multiprocessing pipe between effbench's own
processes (the submission's files are never unpickled). The child is spawned, not forked: a
forked copy of a process with torch threads running is not safe.

The child is not a daemon process (vLLM's engine starts processes of its own, which a daemon may
not), so it is reaped explicitly on every way out: kill() (its whole process group), an atexit
hook for any left running, and, for a parent killed with SIGKILL, Linux's parent-death signal.
"""

from __future__ import annotations

import atexit
import ctypes
import multiprocessing as mp
import multiprocessing.util  # noqa: F401  (its atexit hook joins non-daemon children: registered before ours, run after)
import os
import signal
import subprocess
import sys
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from effbench.backends.common import allocator_stats
from effbench.execute import cpu
from effbench.quiet import quiet_known_messages, route_from_environment, thread_lock_for_progress_bars
from effbench.contracts import WARM_UP_ID, BackendCapabilities, EffbenchError, GenerationRequest, GenerationResult
from effbench.submission import Submission


WORKER_NAME = "effbench-worker"  # the worker's process name in ps, top and psutil (Linux keeps 15 characters)
POLL_S = 0.1  # how often a wait for the worker looks at the stop request
STATS_TIMEOUT_S = 10.0  # the allocator stats are a nicety: a slow reply must not hold the run
_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
# The worker's reaper (see _bind_to_parent): a small process of its own, not a fork of the worker,
# so that it holds none of the worker's pipes and little memory.
_REAPER = """
import ctypes, os, signal, sys
group, worker = int(sys.argv[1]), int(sys.argv[2])
def reap(*_):
    os.killpg(group, signal.SIGKILL)
signal.signal(signal.SIGTERM, reap)
libc = ctypes.CDLL(None)
libc.prctl(1, ctypes.c_ulong(signal.SIGTERM))
libc.prctl(15, ctypes.c_char_p(b"effbench-reaper"))
if os.getppid() != worker:
    reap()
while True:
    signal.pause()
"""


class WorkerTimeout(Exception):
    """The batch did not come back before the deadline; the worker has been killed."""


class WorkerCrashed(Exception):
    """The worker process died (a crash, an OOM kill), or could not start again."""


class BackendRaised(Exception):
    """The backend raised on a batch (a bug: generate() reports bad requests as data), or answered
    it with results that do not match it; the worker is alive and serves the next batch."""


class Interrupted(Exception):
    """A stop was asked for (SIGINT or SIGTERM in the parent) while waiting for the worker; the
    worker has been killed."""


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
    cpu: dict  # the worker's threading policy (effbench/execute/cpu.py policy_report)


def _bind_to_parent(parent_pid: int) -> None:
    """First thing in the worker: it dies with the parent, even one killed with SIGKILL that can
    clean nothing up (a hung worker would otherwise run on under init). Linux's parent-death
    signal, sent when the parent THREAD that started the worker ends: start workers from a thread
    that lives as long as they should. The getppid check closes the race with a parent that died
    before the signal was set. Its own process group, so kill() reaches the engine's processes
    too (vLLM's engine core on a GPU), and a Ctrl-C in the terminal reaches only the parent, which
    decides what stops. A SIGKILLed worker cannot take its own children along: its reaper, a
    child with the worker as its parent-death signal's parent, kills the whole group when the
    worker ends, however it ends."""
    global _reaper
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGKILL)) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
        libc.prctl(_PR_SET_NAME, ctypes.c_char_p(WORKER_NAME.encode()))
    if os.getppid() != parent_pid:  # the parent is gone already
        os._exit(1)
    os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        _reaper = subprocess.Popen([sys.executable, "-I", "-S", "-c", _REAPER, str(os.getpid()), str(os.getpid())],
                                   stdin=subprocess.DEVNULL)


_reaper: subprocess.Popen | None = None  # in the worker: kept referenced for as long as the worker runs


def _worker_main(conn, submission: Submission, cache_dir: Path | None, parent_pid: int) -> None:
    try:
        _bind_to_parent(parent_pid)
        chosen_by = cpu.set_wait_policy()  # before torch loads: the OpenMP runtime reads it once
        quiet_known_messages()
        blocked = cpu.block_second_runtimes(submission.tokenizer_dir)
        route_from_environment()  # the command's libraries.log, unless -v
        thread_lock_for_progress_bars()
        from effbench.backends import make_backend

        backend = make_backend(submission, cache_dir=cache_dir)
        cpu.set_torch_threads()
        backend.start()
        # Warm-up, outside any timing: the first forward pass pays one-off kernel and allocator set-up.
        t0 = time.perf_counter()
        backend.generate([GenerationRequest(id=WARM_UP_ID, prompt="warm up", max_tokens=2)])
        warm = time.perf_counter() - t0
        conn.send(("ready", WorkerInfo(
            backend.name, str(getattr(backend, "model_dir", "")), bool(getattr(backend, "merged_now", False)),
            str(getattr(backend, "device", "cpu")), float(getattr(backend, "load_seconds", 0.0)),
            float(getattr(backend, "merge_seconds", 0.0)), warm, backend.capabilities, cpu.policy_report(chosen_by, blocked),
        )))
    except Exception as e:  # reported to the parent, which raises it there: nothing is swallowed
        conn.send(("error", f"{type(e).__name__}: {e}" if not isinstance(e, EffbenchError) else str(e), isinstance(e, EffbenchError)))
        return
    stats = getattr(backend, "allocator_stats", allocator_stats)  # a backend may know better (the fault backend)
    while True:
        msg = conn.recv()
        if msg[0] == "stats":  # the allocator's view, which only this process has
            try:
                conn.send(("stats", stats()))
            except Exception as e:  # the parent records it in place of the stats
                conn.send(("error", f"allocator stats: {type(e).__name__}: {e}", False))
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
    """vLLM on the CPU decodes faster with Intel's OpenMP preloaded (README, "Backends"): the
    venv's libiomp5.so for a vllm worker, unless LD_PRELOAD is already set."""
    lib = Path(sys.prefix) / "lib" / "libiomp5.so"
    if submission.manifest.backend != "vllm" or os.environ.get("LD_PRELOAD") or not lib.is_file():
        return None
    return str(lib)


_running: "weakref.WeakSet[BackendWorker]" = weakref.WeakSet()


@atexit.register
def _kill_running_workers() -> None:
    """The last way out: a worker still running when effbench exits is killed, not waited for
    (multiprocessing's own exit hook, which runs after this one, joins non-daemon children)."""
    for w in list(_running):
        w.kill()


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

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout: float | None = None, stop: Callable[[], bool] | None = None) -> WorkerInfo:
        """Spawn the worker and wait until its model is loaded (WorkerTimeout past `timeout`,
        Interrupted once `stop()` says so)."""
        self.launch()
        return self.wait_ready(timeout, stop)

    def launch(self) -> None:
        """Spawn the worker; it merges and loads the model while the caller does other work
        (HELM planning the suite): wait_ready() collects it."""
        ctx = mp.get_context("spawn")
        self.info = None  # until this process says it is ready (wait_ready)
        preload = _iomp_preload(self.submission)
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(target=_worker_main, args=(child, self.submission, self.cache_dir, os.getpid()),
                                 daemon=False, name="effbench-backend")
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
        _running.add(self)
        child.close()
        self._conn = parent

    def wait_ready(self, timeout: float | None = None, stop: Callable[[], bool] | None = None) -> WorkerInfo:
        msg = self._recv(timeout, stop)
        if msg[0] == "error":
            self.kill()
            raise EffbenchError(msg[1]) if msg[2] else WorkerCrashed(f"backend failed to start: {msg[1]}")
        self.info = msg[1]
        return self.info

    def _send(self, msg: tuple) -> None:
        if self._conn is None:
            raise WorkerCrashed("backend process is not running")
        try:
            self._conn.send(msg)
        except OSError:  # BrokenPipeError, ConnectionResetError: it died since its last answer
            raise self._died("between batches") from None

    def _recv(self, timeout: float | None, stop: Callable[[], bool] | None = None):
        if self._conn is None:
            raise WorkerCrashed("backend process is not running")
        end = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        while not self._conn.poll(POLL_S if end is None else max(0.0, min(POLL_S, end - time.monotonic()))):
            if stop is not None and stop():
                self.kill()
                raise Interrupted("stop requested while waiting for the backend")
            if end is not None and time.monotonic() >= end:
                self.kill()
                raise WorkerTimeout(f"no answer within {timeout:.1f} s")
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            raise self._died("") from None

    def _died(self, when: str) -> WorkerCrashed:
        proc = self._proc
        if proc is not None:
            proc.join(1)  # its pipe closes a moment before it is reaped: wait for the exit code
        code = proc.exitcode if proc is not None else None
        self.kill()
        return WorkerCrashed(f"backend process died{' ' + when if when else ''} (exit code {code})")

    def generate(self, batch: Sequence[GenerationRequest], timeout: float | None = None,
                 stop: Callable[[], bool] | None = None) -> list[GenerationResult]:
        self._send(("generate", list(batch)))
        msg = self._recv(timeout, stop)
        if msg[0] == "error":
            raise BackendRaised(msg[1])
        return msg[1]

    def allocator_stats(self, timeout: float = STATS_TIMEOUT_S) -> dict:
        """The worker's allocator peaks, for the profile. Never loses a run: a worker that is gone,
        slow (killed after `timeout`) or failing gives {"source": "unavailable", "error": why}."""
        try:
            self._send(("stats",))
            msg = self._recv(timeout)
        except (WorkerCrashed, WorkerTimeout) as e:
            return {"source": "unavailable", "error": str(e)}
        return msg[1] if msg[0] == "stats" else {"source": "unavailable", "error": msg[1]}

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def kill(self) -> None:
        """Kill the worker and its process group (an engine's own processes), and reap it."""
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        _running.discard(self)
        if proc is not None and proc.pid is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass  # no such group: the worker had not made it yet, or all of it is gone
            if proc.is_alive():
                proc.kill()
            proc.join(5)
        if conn is not None:
            conn.close()

    def close(self, timeout: float = 30.0) -> None:
        if self.alive:
            try:
                self._conn.send(("close",))
                end = time.monotonic() + timeout
                while self.alive and time.monotonic() < end and not self._conn.poll(POLL_S):
                    pass
            except OSError:
                pass  # already gone: kill() below reaps it
        self.kill()

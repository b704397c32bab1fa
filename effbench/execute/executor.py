"""What the scheduler (effbench/execute/scheduler.py) drives: the Executor protocol, a backend
behind a deadline, and InProcess, a backend called directly in this process. The other Executor
is worker.BackendWorker, the backend in its own process, which a deadline can kill.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

from effbench.contracts import GenerationRequest, GenerationResult
from effbench.execute.worker import BackendRaised


class Executor(Protocol):
    """What the scheduler drives: a backend behind a deadline (worker.BackendWorker, InProcess)."""

    def generate(self, batch: Sequence[GenerationRequest], timeout: float | None = None,
                 stop: Callable[[], bool] | None = None) -> list[GenerationResult]: ...

    def start(self, timeout: float | None = None, stop: Callable[[], bool] | None = None) -> object: ...

    def kill(self) -> None: ...

    def close(self) -> None: ...


class InProcess:
    """A backend called directly: no process in between, but a hang cannot be interrupted (no
    deadline), and a stop request is seen between batches only."""

    def __init__(self, backend):
        self.backend = backend

    def start(self, timeout=None, stop=None):
        return None

    def generate(self, batch, timeout=None, stop=None):
        try:
            return self.backend.generate(batch)
        except Exception as e:  # a backend bug: errors for this batch, as the worker reports it
            raise BackendRaised(f"backend raised {type(e).__name__}: {e}") from e

    def kill(self):
        pass

    def close(self):
        self.backend.close()

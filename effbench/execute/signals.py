"""A stop asked for by signal (SIGINT, SIGTERM) during a run: StopSignals turns the first one,
once execution has started, into a request the scheduler (effbench/execute/scheduler.py) polls,
so what was answered is kept and scored.
"""

from __future__ import annotations

import signal
import threading


class StopSignals:
    """SIGINT and SIGTERM for the length of a run (a context manager; main thread only, elsewhere
    it changes nothing). Until arm(), they raise KeyboardInterrupt, as SIGINT does by default: the
    run is aborted and its worker killed. Once armed (execution started), the first only asks for a
    stop, which the scheduler sees within worker.POLL_S: the worker is killed, what was answered
    kept, and the caller scores and writes results before ending the run itself. A second one
    raises KeyboardInterrupt at once."""

    def __init__(self):
        self.signum: int | None = None
        self.armed = False
        self._saved: dict = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._saved[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._saved.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        self._saved.clear()

    def arm(self) -> None:
        self.armed = True

    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str | None:
        return signal.Signals(self.signum).name if self.signum is not None else None

    def _handle(self, signum, frame) -> None:
        if not self.armed or self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

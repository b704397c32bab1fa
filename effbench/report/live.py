"""The terminal view of a run: a rich progress bar per run and overall, a budget line (elapsed,
projected finish against the budget in green / amber / red, tokens/s, memory), then a summary table."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn

from effbench.predict.profiler import Telemetry
from effbench.plan import Progress
from effbench.challenge.suites import Suite

AMBER_FROM = 0.9  # projected finish past this fraction of the budget: amber; past the budget: red
RATE_WINDOW_S = 10.0  # tokens/s over the last seconds, not since the start: it shows what runs now


@dataclass(frozen=True)
class BudgetStatus:
    elapsed_s: float
    projected_s: float | None  # None until the first request lands
    budget_s: float | None
    colour: str  # green, yellow (amber) or red; white without a budget

    def line(self, tokens_per_s: float | None, memory: str) -> str:
        proj = "-" if self.projected_s is None else _clock(self.projected_s)
        of = f" of {_clock(self.budget_s)} budget" if self.budget_s is not None else " (no budget)"
        rate = "-" if tokens_per_s is None else f"{tokens_per_s:,.0f}"
        return (f"elapsed {_clock(self.elapsed_s)}  [bold {self.colour}]projected finish {proj}{of}[/]"
                f"  {rate} tok/s  {memory}")


def budget_status(elapsed_s: float, done: int, total: int, budget_s: float | None) -> BudgetStatus:
    """Projected finish at the pace so far (requests done per second; the scheduler mixes long and
    short requests, so the pace of the first few batches stands for the rest)."""
    projected = elapsed_s * total / done if done > 0 and total > 0 else None
    if budget_s is None:
        colour = "white"
    elif projected is None or projected <= AMBER_FROM * budget_s:
        colour = "green"
    elif projected <= budget_s:
        colour = "yellow"
    else:
        colour = "red"
    return BudgetStatus(elapsed_s, projected, budget_s, colour)


def _clock(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class LiveView:
    def __init__(self, console: Console, suite: Suite):
        self.console = console
        self.suite = suite
        self.bars = RichProgress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=False, refresh_per_second=2,  # a cheap parent: the backend wants the cores
        )
        self.phase_task = None
        self.total_task = None
        self.run_tasks: dict[str, int] = {}
        self.budget_task = None
        self.exec_start = 0.0
        self.budget_s: float | None = None
        self.total = self.done = 0
        self.sampler: Telemetry | None = None
        self.recent: deque[tuple[float, int]] = deque()  # (time landed, tokens) of recent batches
        self.progress = Progress(on_phase=self._phase, on_plan=self._plan, on_batch=self._batch, on_warning=self._warn,
                                 on_execute=self._execute)

    def __enter__(self) -> "LiveView":
        self.bars.start()
        self.phase_task = self.bars.add_task("phase: start", total=None)
        return self

    def __exit__(self, *exc) -> None:
        self.bars.stop()

    def _phase(self, name: str) -> None:
        self.bars.update(self.phase_task, description=f"phase: {name}")

    def _warn(self, line: str) -> None:
        self.bars.console.print(f"[yellow]warning:[/] {escape(line)}", highlight=False, soft_wrap=True)

    def _plan(self, requests_per_run: dict[str, int]) -> None:
        self.total_task = self.bars.add_task(f"[bold]{self.suite.name}: all runs", total=sum(requests_per_run.values()))
        for name, n in requests_per_run.items():
            self.run_tasks[name] = self.bars.add_task(f"  {name}", total=n)

    def _execute(self, budget_s: float | None, n: int, sampler: Telemetry) -> None:
        self.exec_start, self.budget_s, self.total, self.sampler = time.time(), budget_s, n, sampler
        self.budget_task = self.bars.add_task("", total=None)
        self._update_budget()

    def _batch(self, reqs, results) -> None:
        self.bars.advance(self.total_task, len(reqs))
        for r in reqs:
            self.bars.advance(self.run_tasks[r.origin.run], 1)
        self.done += len(reqs)
        self.recent.append((time.time(), sum(r.computed_tokens for r in results)))
        self._update_budget()

    def _update_budget(self) -> None:
        now = time.time()
        while self.recent and self.recent[0][0] < now - RATE_WINDOW_S:
            self.recent.popleft()
        span = min(RATE_WINDOW_S, now - self.exec_start)
        rate = sum(t for _, t in self.recent) / span if self.recent and span > 0 else None
        status = budget_status(now - self.exec_start, self.done, self.total, self.budget_s)
        self.bars.update(self.budget_task, description=status.line(rate, self._memory()))

    def _memory(self) -> str:
        s = self.sampler.samples[-1] if self.sampler is not None and self.sampler.samples else None
        if s is None:
            return ""
        if s.gpu_bytes is not None:
            return f"GPU {s.gpu_bytes / 2**30:.2f} GiB"
        return f"RSS {s.rss_bytes / 2**30:.2f} GiB"

    def summary(self, results: dict, console: Console | None = None, verbose: bool = False) -> None:
        from effbench.report.summary import print_summary

        print_summary(results, console or self.console, verbose)

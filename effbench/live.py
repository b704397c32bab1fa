"""The terminal view of a run: a rich progress bar per run and overall, then a summary table."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn
from rich.table import Table

from effbench.runner import Progress
from effbench.suites import Suite


class LiveView:
    def __init__(self, console: Console, suite: Suite):
        self.console = console
        self.suite = suite
        self.bars = RichProgress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=False,
        )
        self.phase_task = None
        self.total_task = None
        self.run_tasks: dict[str, int] = {}
        self.progress = Progress(on_phase=self._phase, on_plan=self._plan, on_batch=self._batch, on_warning=self._warn)

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

    def _batch(self, reqs, results) -> None:
        self.bars.advance(self.total_task, len(reqs))
        for r in reqs:
            self.bars.advance(self.run_tasks[r.origin.run], 1)

    def summary(self, results: dict, console: Console | None = None) -> None:
        print_summary(results, console or self.console)


def print_summary(results: dict, console: Console) -> None:
    """The summary table of a results.json (after a run, and again with `effbench report`)."""
    t = Table(title=f"{results['submission']['name']} on {results['suite']['name']}")
    for col in ("run", "status", "metric", "score", "requests", "errors", "prompt tok", "output tok", "tok/s", "busy s", "peak MiB"):
        t.add_column(col, justify="left" if col in ("run", "metric") else "right", overflow="fold")
    model_suffix = f"model=effbench_{results['submission']['name']}"
    for r in results["runs"]:
        name = r["name"].replace("," + model_suffix, "").replace(":" + model_suffix, "")
        t.add_row(
            name, r["status"], r["main_metric"] or "-", "-" if r["score"] is None else f"{r['score']:.3f}",
            str(r["requests"]), str(r["errors"]), str(r["prompt_tokens"]), str(r["output_tokens"]),
            f"{r.get('tokens_per_s') or 0:.0f}", f"{r.get('busy_seconds') or 0:.1f}",
            f"{(r['peak_memory_bytes'] or 0) / 2**20:.0f}",
        )
    tot = results["totals"]
    t.add_row(
        "[bold]total", f"{tot['not_run']} not run", "mean", "-" if tot["mean_score"] is None else f"{tot['mean_score']:.3f}",
        str(tot["requests"]), str(tot["errors"]), str(tot["prompt_tokens"]), str(tot["output_tokens"]),
        f"{tot['tokens_per_s'] or 0:.0f}", f"{tot['execute_seconds']:.1f}", f"{tot['peak_memory_bytes'] / 2**20:.0f}",
    )
    console.print(t)
    ph = ", ".join(f"{k} {v:.1f}s" for k, v in results["phases"].items())
    console.print(f"phases: {ph}; memory source: {results['memory_source']}")

"""The commands that read a finished run's output folder: `report` (terminal summary, HTML),
`simulate` (other budgets), and `bench-compare` (benchmark figures against a baseline)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from effbench.cli.common import console, duration_minutes, fail, out_console, write_json_out
from effbench.contracts import EffbenchError, Order, Semantics


def report(
    out: Annotated[Path, typer.Argument(help="Output folder of an `effbench run` (or its results.json).")],
    html: Annotated[bool, typer.Option("--html", help="Also write a self-contained HTML report with plots (opens offline).")] = False,
    html_out: Annotated[Optional[Path], typer.Option("--html-out", help="Where to write the HTML report (implies --html). Default: OUT/report.html.")] = None,
    prediction: Annotated[Optional[Path], typer.Option(help="An `effbench check` folder or its check.json: adds predicted against actual (implies --html).")] = None,
    budgets: Annotated[Optional[str], typer.Option(help="Budgets for the score-against-budget plot, e.g. 1m,5m,30m (implies --html). Default: fractions of the run's execute time and its budget.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="The summary per run (default: per scenario group).")] = False,
) -> None:
    """Render a run's results.json again, after checking it against its versioned JSON Schema
    (effbench/schemas/results.schema.json); with --html, also as one HTML file with plots
    (throughput, memory, time per run, score against budget, predicted against actual)."""
    from effbench.report.summary import print_summary
    from effbench.results import load_results

    try:
        results = load_results(out)
        minutes = None
        if budgets is not None:
            minutes = [duration_minutes(b, "--budgets") for b in budgets.split(",") if b.strip()]
            if not minutes or any(m is None or m <= 0 for m in minutes):
                raise EffbenchError(f"--budgets: {budgets!r}: give positive durations, e.g. 1m,5m,30m")
    except EffbenchError as e:
        fail(e)
    print_summary(results, out_console, verbose)
    if not (html or html_out is not None or prediction is not None or budgets is not None):
        return
    from effbench.report.html import write_html_report

    console.print("writing the HTML report (replays the journal at several budgets: a few seconds)", highlight=False)
    try:
        path = write_html_report(out, html_out, prediction=prediction, budgets=minutes)
    except EffbenchError as e:
        fail(e)
    out_console.print(f"HTML report: {escape(str(path))}", highlight=False, soft_wrap=True)


def simulate(
    out: Annotated[Path, typer.Argument(help="Output folder of a finished `effbench run`.")],
    budget: Annotated[str, typer.Option(help="Comma-separated budgets, e.g. 30m,60m,300m.")] = "1m,5m,30m,60m,300m",
    order: Annotated[Optional[Order], typer.Option(help="Replay in another order (effbench or helm); default: the recorded one.")] = None,
    semantics: Annotated[Optional[Semantics], typer.Option(help="item or helm; default: the run's own.")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the score-against-budget curve as JSON here.")] = None,
) -> None:
    """The score the same submission would have had under other budgets (and orders), replaying the
    recorded per-request timings from the run's journal and scoring with HELM's metrics."""
    from rich.table import Table

    from effbench.report.simulate import simulate as run_simulation

    try:
        budgets = [duration_minutes(b) for b in budget.split(",") if b.strip()]
        if not budgets or any(b is None or b <= 0 for b in budgets):
            raise EffbenchError(f"--budget: {budget!r}: give positive durations, e.g. 30m,60m,300m")
        report = run_simulation(out, budgets, order, semantics)
    except EffbenchError as e:
        fail(e)
    scenarios = sorted({k for p in report["points"] for k in p["scenario_scores"]})
    table = Table(title=f"{out}: order {report['order']}, semantics {report['semantics']}")
    for col in ("budget (min)", "answered", "runs finished", "suite score", *scenarios):
        table.add_column(col, justify="right")
    for p in report["points"]:
        table.add_row(f"{p['budget_minutes']:g}", f"{p['answered']}/{p['requests']}", f"{p['runs_finished']}/{p['runs']}",
                      f"{p['suite_score']:.4f}", *(f"{p['scenario_scores'].get(k, 0.0):.4f}" for k in scenarios))
    out_console.print(table)
    if json_out is not None:
        write_json_out(json_out, report)


def bench_compare(
    current: Annotated[Path, typer.Argument(help="pytest-benchmark JSON of this run (pytest --benchmark-json=PATH).")],
    baseline: Annotated[Path, typer.Option(help="pytest-benchmark JSON to compare with.")] = Path("bench/baseline.json"),
    thresholds: Annotated[Path, typer.Option(help="TOML: [default] and [figures.NAME] with relative= / absolute=.")] = Path("bench/thresholds.toml"),
) -> None:
    """Compare the figures tracked by a benchmark run (extra_info["tracked"]) with a baseline;
    exit 1 when any got worse than its threshold allows or went missing (2: bad input)."""
    from rich.table import Table

    from effbench.report.regress import compare, load_thresholds, tracked_figures

    try:
        default, per_figure = load_thresholds(thresholds)
        rows = compare(tracked_figures(current), tracked_figures(baseline), default, per_figure)
    except EffbenchError as e:
        fail(e)
    table = Table(title=f"{current} against {baseline}")
    for col in ("figure", "better", "baseline", "this run", "change", "limit", "verdict"):
        table.add_column(col, justify="left" if col in ("figure", "verdict") else "right")
    fmt = lambda v, unit: "-" if v is None else f"{v:.4g} {unit}"
    for c in rows:
        verdict = "[bold red]REGRESSED[/]" if c.regressed else "[green]ok[/]"
        table.add_row(c.name, c.better, fmt(c.baseline, c.unit), fmt(c.current, c.unit),
                      "-" if c.change is None else f"{c.change:+.1%}", fmt(c.limit, c.unit),
                      verdict + (f" ({c.note})" if c.note else ""))
    out_console.print(table)
    bad = [c.name for c in rows if c.regressed]
    if bad:
        out_console.print(f"[bold red]{len(bad)} regressed:[/] {', '.join(bad)}", highlight=False)
        raise typer.Exit(1)

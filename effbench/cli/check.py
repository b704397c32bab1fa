"""`effbench check`: the pre-submission timeout check (effbench.predict.check) and its table;
its exit code is the verdict."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from effbench.cli.common import AllowOutsidePaths, AllowPickle, TrustRemoteCode, console, duration_minutes, name_library_log, out_console, write_json_out
from effbench.contracts import BackendName, EffbenchError, Order, Semantics


def check(
    submission: Annotated[Path, typer.Argument(help="Submission folder (with effbench.toml).")],
    suite: Annotated[str, typer.Option(help="Built-in suite name or a suite .toml file.")] = "neurips2023-open",
    track: Annotated[str, typer.Option(help="Target card: 4090, a100-40gb, h100, h200, or here (this machine).")] = "here",
    probe: Annotated[float, typer.Option(help="Share of the requests to run as the probe (stratified: every run gets its share).")] = 0.05,
    budget: Annotated[Optional[str], typer.Option(help="Budget to check against (default: the suite's), e.g. 300m.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Folder for the probe's files. Default: effbench-out/<submission>-<suite>-check.")] = None,
    order: Annotated[Order, typer.Option(help="Scheduling order to project: effbench or helm.")] = "effbench",
    semantics: Annotated[Semantics, typer.Option(help="How unfinished work counts in the expected score: item or helm.")] = "item",
    max_eval_instances: Annotated[Optional[int], typer.Option(min=1, help="Caps the instances of every run.")] = None,
    runs: Annotated[Optional[str], typer.Option(help="Only runs whose name or entry matches this glob.")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Local copies of public datasets (see `run`).")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Merged-weights and hardware-profile cache.")] = None,
    in_process: Annotated[bool, typer.Option("--in-process", help="Run the backend in this process.")] = False,
    backend: Annotated[Optional[BackendName], typer.Option(help="Serve with this backend instead of the manifest's (hf, vllm).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the whole check as JSON here.")] = None,
    html: Annotated[bool, typer.Option("--html", help="Also draw the projection per scenario group and the memory fit: OUT/check.html.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also one row per run (default: per scenario group; check.json has every run), and the libraries' own messages on the terminal (default: OUT/libraries.log).")] = False,
    allow_pickle: AllowPickle = False,
    trust_remote_code: TrustRemoteCode = False,
    allow_outside_paths: AllowOutsidePaths = False,
) -> None:
    """The pre-submission timeout check: from a short probe, will SUBMISSION finish the suite within
    its budget on the target card, and what is lost if not? Exit 0 PASS, 1 AT RISK, 2 FAIL
    (3: the check itself could not run)."""
    from effbench.predict.check import check as run_check
    from effbench.paths import default_cache_dir, safe_name
    from effbench.plan import RunOptions, check_run_filter
    from effbench.predict.hardware import known_names
    from effbench.quiet import LIBRARY_LOG, libraries_logged_to
    from effbench.submission import Submission
    from effbench.challenge.suites import load_suite

    try:
        sub = Submission.load(submission, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code,
                              allow_outside_paths=allow_outside_paths)
        sub = sub.with_backend(backend) if backend else sub
        suite_obj = load_suite(suite)
        check_run_filter(suite_obj, runs)
        if track not in known_names():  # before planning and loading, not after
            raise EffbenchError(f"--track: unknown hardware profile {track!r}; one of {', '.join(known_names())}")
        out = out or Path("effbench-out") / safe_name(f"{sub.name}-{suite_obj.name}-check")
        opts = RunOptions(out=out, max_eval_instances=max_eval_instances, run_filter=runs, cache_dir=cache_dir,
                          data_dir=data_dir, order=order, semantics=semantics, in_process=in_process)
        budget_min = duration_minutes(budget)
        with libraries_logged_to(None if verbose else out / LIBRARY_LOG) as log:
            report = run_check(sub, suite_obj, opts, track=track, probe_fraction=probe, budget_minutes=budget_min,
                               hardware_cache=cache_dir or default_cache_dir())
    except EffbenchError as e:
        console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(3)
    print_check(report, sub.name, verbose)
    pr = report["probe"]
    out_console.print(f"probe: {pr['requests']} of {report['requests']} requests ({pr['fraction']:.1%}), {pr['batches']} batches,"
                      f" {pr['seconds']:.1f} s; whole check {report['check_seconds']:.1f} s", highlight=False)
    out_console.print(f"memory: {report['memory']['summary']}", highlight=False)
    for line in contention_lines(report["contention"]):
        out_console.print(line, highlight=False)
    if html:
        from effbench.report.html_check import write_check_html

        out_console.print(f"HTML: {write_check_html(out)}", highlight=False)
    if json_out is not None:
        write_json_out(json_out, report, exit_code=3)  # 2 is FAIL here
    name_library_log(log)
    raise typer.Exit(report["exit_code"])


def contention_lines(c: dict | None) -> list[str]:
    """What check says about others on the cores during the probe (check.json's `contention`):
    a line when they took enough to widen the interval, one when the hypervisor's steal ran
    above its usual share."""
    if c is None:
        return []
    lines = []
    if c["contended"]:
        lines.append(f"[yellow]contention:[/] other work used {c['share']:.0%} of this process's {c['cores']} cores during the"
                     f" probe ({c['other_cores']:.2f} cores' worth, steal {c['steal_share']:.1%}): the interval is widened"
                     f" x{c['interval_widened_by']:.2f}; check again on a quiet machine for a tighter one")
    if c["steal_share"] >= c["usual_steal_share"] + 0.02:
        lines.append(f"steal: the hypervisor took {c['steal_share']:.1%} of the cores during the probe, {c['usual_steal_share']:.1%}"
                     " since boot; the projection keeps the probe's pace (a burst that ends leaves it pessimistic)")
    return lines


def print_check(report: dict, name: str, verbose: bool, console=None) -> None:
    """The verdict first (with every run left out named), then one row per scenario group, then
    per run with --verbose. `console`: where (default: stdout's)."""
    from rich.table import Table

    out = console or out_console

    from effbench.report.summary import NAME_WIDTH, left_out_line, short_name

    pm, es, budget = report["projected_minutes"], report["expected_score"], report["budget_minutes"]
    colour = {"PASS": "green", "AT RISK": "yellow", "FAIL": "red"}[report["verdict"]]
    total = len(report["runs"]) + len(report["not_run"])
    scope = f" on {len(report['runs'])} of {total} runs" if report["not_run"] else ""
    out.print(
        f"[bold {colour}]{report['verdict']}[/]{scope}: projected {pm['median']:.1f} min (90% interval {pm['p05']:.1f}-{pm['p95']:.1f})"
        f" of {budget:g} min on {escape(report['track'])}; expected score {es['if_all_finish']:.4f},"
        f" {es['within_budget']:.4f} within the budget (lost {es['lost']:.4f})", highlight=False)
    if (left := left_out_line(report["not_run"], total)) is not None:
        out.print(f"[yellow]{escape(left)}[/]", highlight=False)
    groups: dict[str, list[dict]] = {}
    for r in report["runs"]:
        groups.setdefault(r.get("scenario") or r["name"].split(":")[0], []).append(r)
    table = Table(title=f"{escape(name)} on {escape(report['suite'])}, projected on {escape(report['track'])}", title_justify="left")
    for col in ("scenario", "runs", "requests", "finish (min)", "of budget", "answered in budget"):
        table.add_column(col, justify="left" if col == "scenario" else "right", overflow="ellipsis", no_wrap=col == "scenario",
                         max_width=NAME_WIDTH if col == "scenario" else None)
    for group, rs in groups.items():
        fin = [r["projected_finish_min"] for r in rs if r["projected_finish_min"] is not None]
        last = max(fin) if fin else None
        table.add_row(escape(group), str(len(rs)), str(sum(r["requests"] for r in rs)), "-" if last is None else f"{last:.2f}",
                      "-" if last is None else f"{last / budget:.0%}", str(sum(r["answered_within_budget"] for r in rs)))
    out.print(table)
    if verbose:
        runs = Table(title="per run", title_justify="left")
        for col in ("run", "requests", "probed", "finish (min)", "answered in budget", "probe score"):
            runs.add_column(col, justify="left" if col == "run" else "right", overflow="ellipsis", no_wrap=col == "run",
                            max_width=NAME_WIDTH if col == "run" else None)
        for r in report["runs"]:
            runs.add_row(escape(short_name(r["name"])), str(r["requests"]), str(r["probed"]),
                         "-" if r["projected_finish_min"] is None else f"{r['projected_finish_min']:.2f}",
                         str(r["answered_within_budget"]), "-" if r["probe_score"] is None else f"{r['probe_score']:.3f}")
        out.print(runs)
    out.print(f"{report['runs_past_budget']} runs / {report['items_past_budget']} requests past the budget;"
                      f" per run: --verbose or check.json", highlight=False)

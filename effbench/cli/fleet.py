"""`effbench fleet`: many submissions on a Ray cluster (effbench/fleet/), `effbench fleet status
FLEET_OUT`, and `--dry-run`'s slot-hours plan."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from effbench.cli.common import AllowOutsidePaths, AllowPickle, TrustRemoteCode, console, duration_minutes, fail, out_console
from effbench.contracts import EffbenchError, MissingData, Order, Semantics


def fleet(
    submissions: Annotated[list[str], typer.Argument(help="Submission folders, globs of them, or folders of submission folders. `status FLEET_OUT` shows a fleet's state instead.")],
    suite: Annotated[str, typer.Option(help="Built-in suite name or a suite .toml file, for every submission.")] = "default",
    out: Annotated[Path, typer.Option(help="The fleet's folder, reachable from every node (shared storage): a folder per submission, its state, journal and results, and ranking.json.")] = Path("effbench-fleet"),
    address: Annotated[Optional[str], typer.Option(help="Ray cluster: 'auto' (one started with `ray start`), ray://host:port, or host:port. Default: a cluster of this machine only, on 127.0.0.1.")] = None,
    slots: Annotated[int, typer.Option(min=1, help="Without --address: submissions run at once on this machine (each its own model copy).")] = 1,
    budget: Annotated[Optional[str], typer.Option(help="Each submission's wall-clock budget from its first request: 300m, 90s, 2h (a bare number is minutes), or none. Default: the suite's.")] = None,
    max_eval_instances: Annotated[Optional[int], typer.Option(min=1, help="Caps the instances of every run.")] = None,
    runs: Annotated[Optional[str], typer.Option(help="Only runs whose name or entry matches this glob.")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Local copies of public datasets, reachable from every node; implies offline.")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Merged-weights cache on each node. Default: $EFFBENCH_CACHE or ~/.cache/effbench.")] = None,
    missing_data: Annotated[MissingData, typer.Option(help="As for `effbench run`.")] = "auto",
    track: Annotated[str, typer.Option(help="Hardware track the slots stand for (ranked per track).")] = "local",
    order: Annotated[Order, typer.Option(help="As for `effbench run`.")] = "effbench",
    semantics: Annotated[Semantics, typer.Option(help="As for `effbench run`.")] = "item",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and print the slot-hours plan (from `effbench check` outputs in --checks, else the budget as the bound); run nothing.")] = False,
    checks: Annotated[Optional[Path], typer.Option(help="With --dry-run: a folder of `effbench check` outputs, CHECKS/<name>/check.json.")] = None,
    tracks: Annotated[int, typer.Option(min=1, help="With --dry-run: hardware tracks each submission is evaluated on.")] = 1,
    watch: Annotated[bool, typer.Option("--watch", help="With status: refresh until every submission has ended.")] = False,
    allow_pickle: AllowPickle = False,
    trust_remote_code: TrustRemoteCode = False,
    allow_outside_paths: AllowOutsidePaths = False,
) -> None:
    """Evaluate many submissions, each as one `effbench run` in a Ray task holding one slot (a GPU,
    or the custom resource effbench_slot), each under its own budget from when it starts; a task
    lost with its node is retried elsewhere and resumes from its journal. Ends with the fleet's
    ranking (`effbench rank`), written to OUT/ranking.json."""
    try:
        if submissions[0] == "status":
            if len(submissions) != 2:
                raise EffbenchError("fleet status: give the fleet's folder: `effbench fleet status FLEET_OUT`")
            return _status(Path(submissions[1]), watch)
        from effbench.challenge.suites import load_suite
        from effbench.plan import RunOptions, check_run_filter

        suite_obj = load_suite(suite)
        check_run_filter(suite_obj, runs)
        suite_ref = str(Path(suite).resolve()) if suite.endswith(".toml") else suite
        minutes = duration_minutes(budget)
        trust = {"allow_pickle": allow_pickle, "trust_remote_code": trust_remote_code, "allow_outside_paths": allow_outside_paths}
        if dry_run:
            return _dry_run(submissions, suite_obj, minutes, checks, slots, tracks, trust)
        from effbench.fleet.driver import run_fleet, task_options

        opts = RunOptions(out=out, max_eval_instances=max_eval_instances, run_filter=runs, cache_dir=cache_dir, data_dir=data_dir,
                          missing_data=missing_data, track=track, budget_minutes=minutes, order=order, semantics=semantics)
        t0 = time.time()
        subs, states = run_fleet(submissions, suite_ref, out.resolve(), task_options(opts), trust, address=address,
                                 slots=slots, echo=lambda line: console.print(escape(line), highlight=False, soft_wrap=True))
        _print_status(out)
        ranking = _ranking(out, list(subs.accepted))
        console.print(f"fleet of {len(subs.accepted)} ({len(subs.rejected)} left out) in {time.time() - t0:.0f} s;"
                      f" ranking: {ranking or 'none (no results)'}", highlight=False)
        if any(s["state"] == "failed" for s in states.values()) or subs.rejected:
            raise typer.Exit(1)
    except EffbenchError as e:
        fail(e)


def _dry_run(args, suite_obj, minutes, checks, slots, tracks, trust) -> None:
    from rich.table import Table

    from effbench.fleet.driver import discover, validate
    from effbench.fleet.plan import slot_plan

    subs = validate(discover(args), trust)
    for why in subs.rejected.values():
        console.print(f"left out: {escape(why)}", highlight=False, soft_wrap=True)
    budget = suite_obj.budget_minutes if minutes is None or minutes <= 0 else minutes
    plan = slot_plan(list(subs.accepted), budget, slots, checks, tracks)
    table = Table(title=f"fleet plan: suite {escape(suite_obj.name)}, budget {budget:g} min, {slots} slot(s), {tracks} track(s)",
                  title_justify="left")
    for col in ("submission", "projected min (median)", "p95", "from", "check says"):
        table.add_column(col, justify="right" if "min" in col or col == "p95" else "left")
    for r in plan["submissions"]:
        table.add_row(escape(r["submission"]), f"{r['median_min']:.1f}", f"{r['p95_min']:.1f}", r["source"], r["verdict"] or "")
    out_console.print(table)
    sh, wh = plan["slot_hours"], plan["wall_hours"]
    out_console.print(f"slot-hours: {sh['median']:.2f} (median), {sh['p95']:.2f} (p95); wall time on {slots} slot(s):"
                      f" {wh['median']:.2f} h (median), {wh['p95']:.2f} h (p95); at this pace 100 submissions x 2 tracks"
                      f" need {plan['per_100_submissions_x2_tracks_slot_hours']:.0f} slot-hours (p95)", highlight=False)


def _status(out: Path, watch: bool) -> None:
    from effbench.fleet.status import all_ended, rows

    while True:
        table = rows(out)
        _print_status(out, table)
        if not watch or all_ended(table):
            break
        time.sleep(2.0)
    if all_ended(table):
        from effbench.fleet.layout import read_fleet

        _ranking(out, list(read_fleet(out)["submissions"]))


def _ranking(out: Path, names: list[str]) -> Path | None:
    """OUT/ranking.json written and printed (per track, as `effbench rank`); None without results."""
    from effbench.challenge.rank_output import print_ranking, rank_files, write_json
    from effbench.fleet.driver import finished_results

    paths = finished_results(out, names)
    if not paths:
        return None
    ranking = rank_files(paths)
    write_json(ranking, out / "ranking.json")
    print_ranking(ranking, out_console)
    return out / "ranking.json"


def _print_status(out: Path, table: list[dict] | None = None) -> None:
    from rich.table import Table

    from effbench.fleet.status import rows

    table = rows(out) if table is None else table
    t = Table(title=f"fleet {escape(str(out))}", title_justify="left")
    for col in ("submission", "state", "answered", "budget used", "projected / budget", "tries", "reason"):
        t.add_column(col, overflow="fold")
    for r in table:
        done = f"{r['answered']}/{r['requests']}" if r["requests"] else "-"
        budget = f"{r['budget_min']:g} min" if r["budget_min"] else "none"
        proj = f"{r['projected_min']:.1f} min / {budget}" if r["projected_min"] is not None else f"- / {budget}"
        t.add_row(escape(r["submission"]), r["state"], done, f"{r['budget_used_min']:.1f} min", proj, str(r["attempts"]),
                  escape((r["reason"] or "")[:200]))
    out_console.print(t)

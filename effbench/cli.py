"""The `effbench` command line (typer + rich). Errors an user can fix print one line, exit 2."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from effbench import __version__
from effbench.contracts import BackendName, EffbenchError, MissingData, Order, Semantics

app = typer.Typer(
    help="Time-limited evaluation of fine-tuned LLMs (base model + LoRA) with HELM scenarios.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)  # progress and errors
# Results on stdout; not a terminal (a log, CI): wide enough that the summary table does not fold.
out_console = Console(width=None if sys.stdout.isatty() else 200)


def _version(value: bool) -> None:
    if value:
        print(f"effbench {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
) -> None:
    """effbench evaluates a submission folder against a suite of HELM run entries."""


def _fail(e: EffbenchError) -> None:
    console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@app.command()
def demo(
    out: Annotated[Path, typer.Argument(help="Folder to create (must be absent or empty).")],
    hidden_size: Annotated[int, typer.Option(help="Model width; head_dim stays 64.")] = 128,
    layers: Annotated[int, typer.Option(help="Number of decoder layers.")] = 2,
    no_adapter: Annotated[bool, typer.Option("--no-adapter", help="Build the base model only.")] = False,
    seed: Annotated[int, typer.Option(help="Seed for tokenizer corpus and weights.")] = 0,
) -> None:
    """Build the demo submission: a tokenizer trained locally, a small random Llama and a LoRA
    adapter, offline and deterministic (same seed, same bytes), in a few seconds."""
    from effbench.demo import build_demo

    try:
        path = build_demo(out, hidden_size=hidden_size, num_layers=layers, num_heads=max(1, hidden_size // 64),
                          with_adapter=not no_adapter, seed=seed)
    except EffbenchError as e:
        _fail(e)
    console.print(f"demo submission written to [bold]{path}[/]; next: effbench run {path}")


# The command line alone may widen what a submission is allowed (its manifest cannot): README,
# "Submissions are untrusted".
AllowPickle = Annotated[bool, typer.Option("--allow-pickle", help="Load *.bin/*.pt weights (pickle: runs code). Only for trusted submissions.")]
TrustRemoteCode = Annotated[bool, typer.Option("--trust-remote-code", help="Run the submission's own model and tokenizer code (auto_map, *.py). Only for trusted submissions.")]
AllowOutsidePaths = Annotated[bool, typer.Option("--allow-outside-paths", help="Let base, adapter and tokenizer (and links in their folders) point outside the submission folder.")]


def _write_json_out(path: Path, obj: dict, exit_code: int = 2) -> None:
    """A --json output, whole or not at all (effbench.atomic); a failure is one line and `exit_code`."""
    from effbench.atomic import write_json_atomic

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, obj, default=str)
    except OSError as e:
        console.print(f"[bold red]error:[/] {escape(f'{path}: cannot write the JSON output ({e.strerror or e}) (option --json)')}",
                      highlight=False, soft_wrap=True)
        raise typer.Exit(exit_code) from None


def _minutes(text: str | None) -> float | None:
    """'300m', '90s', '2h' or a bare number of minutes; 'none' for no deadline."""
    if text is None:
        return None
    t = text.strip().lower()
    if t in ("none", "off", "0"):
        return 0.0
    scale = {"s": 1 / 60, "m": 1.0, "h": 60.0}.get(t[-1:], None)
    try:
        return float(t[:-1]) * scale if scale is not None else float(t)
    except ValueError:
        raise EffbenchError(f"--budget: {text!r} is not a duration (e.g. 300m, 90s, 2h, none)") from None


@app.command()
def run(
    submission: Annotated[Optional[Path], typer.Argument(help="Submission folder (with effbench.toml); not needed with --resume.")] = None,
    suite: Annotated[str, typer.Option(help="Built-in suite name (see scenarios/) or a suite .toml file.")] = "default",
    out: Annotated[Optional[Path], typer.Option(help="Output folder. Default: effbench-out/<submission>-<suite>.")] = None,
    budget: Annotated[Optional[str], typer.Option(help="Wall-clock budget from the first request: 300m, 90s, 2h, or none. Default: the suite's.")] = None,
    order: Annotated[Order, typer.Option(help="'effbench': batches across runs, duplicates computed once, runs advance together; 'helm': the challenge's config order, run by run.")] = "effbench",
    semantics: Annotated[Semantics, typer.Option(help="Unanswered at the deadline: 'item' scores each as an empty answer; 'helm' (the challenge's) loses an unfinished or failed run whole.")] = "item",
    resume: Annotated[Optional[Path], typer.Option(help="Continue the run in this output folder from its journal (same options as it was started with; the folder may have been moved or copied).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start again in an output folder that holds an earlier run's journal (replaced once the new run starts); without it such a folder is refused.")] = False,
    max_eval_instances: Annotated[Optional[int], typer.Option(min=1, help="Caps the instances of every run (quick versions of a suite).")] = None,
    runs: Annotated[Optional[str], typer.Option(help="Only runs whose name or entry matches this glob.")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Merged-weights cache. Default: $EFFBENCH_CACHE or ~/.cache/effbench.")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Local copies of public datasets in their published formats (e.g. ../shared/data); implies offline: nothing is downloaded.")] = None,
    missing_data: Annotated[MissingData, typer.Option(help="With --data-dir, a run whose data is missing: 'auto' stops when a dataset is absent altogether and records runs of an incomplete one as not run (score 0); 'skip' records all as not run; 'stop' stops on any.")] = "auto",
    track: Annotated[str, typer.Option(help="Hardware track this run stands for (e.g. 4090, a100-40gb); `effbench rank` ranks per track.")] = "local",
    in_process: Annotated[bool, typer.Option("--in-process", help="Run the backend in this process (starts faster; a hung backend can then not be stopped at the deadline).")] = False,
    backend: Annotated[Optional[BackendName], typer.Option(help="Serve with this backend instead of the manifest's (hf, vllm).")] = None,
    allow_pickle: AllowPickle = False,
    trust_remote_code: TrustRemoteCode = False,
    allow_outside_paths: AllowOutsidePaths = False,
) -> None:
    """Evaluate SUBMISSION on a suite under a time budget: HELM builds prompts and metrics, effbench
    batches the requests through the submission's backend (in a worker process it can stop at the
    deadline), journals every result, and writes results.json and HELM run folders."""
    from effbench.report.live import LiveView
    from effbench.paths import safe_name
    from effbench.plan import RunOptions
    from effbench.results import load_run_config, save_run_config
    from effbench.runner import run_suite
    from effbench.submission import Submission
    from effbench.challenge.suites import load_suite

    opts = None
    try:
        if resume is not None:
            if out is not None and Path(os.path.abspath(out)) != Path(os.path.abspath(resume)):
                raise EffbenchError(f"--out {out} with --resume {resume}: a resumed run continues in its own folder;"
                                    " give only --resume")
            config = load_run_config(resume)  # options.out is `resume` as given, wherever the folder is now
            submission, suite = Path(config["submission"]), config["suite"]
            allow_pickle, trust_remote_code = config["allow_pickle"], config["trust_remote_code"]
            allow_outside_paths = config.get("allow_outside_paths", False)
            opts = RunOptions.from_json({**config["options"], "resume": True})
        elif submission is None:
            raise EffbenchError("run: give a SUBMISSION folder, or --resume OUT to continue a run")
        sub = Submission.load(submission, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code,
                              allow_outside_paths=allow_outside_paths)
        if resume is not None and config.get("backend"):
            sub = sub.with_backend(config["backend"])
        elif backend is not None:
            sub = sub.with_backend(backend)
        suite_obj = load_suite(suite)
        if resume is None:
            out = out or Path("effbench-out") / safe_name(f"{sub.name}-{suite_obj.name}")
            opts = RunOptions(out=out, max_eval_instances=max_eval_instances, run_filter=runs, cache_dir=cache_dir,
                              data_dir=data_dir, missing_data=missing_data, track=track, budget_minutes=_minutes(budget),
                              order=order, semantics=semantics, in_process=in_process)
            save_run_config(opts, sub, suite, overwrite=overwrite)
        with LiveView(console, suite_obj) as view:
            outcome = run_suite(sub, suite_obj, opts, view.progress)
    except EffbenchError as e:
        _fail(e)
    except OSError as e:  # writing into --out: a file, read-only or full (HELM's own writes land here)
        from effbench.execute.journal import out_error

        if opts is None or (err := out_error(opts.out, e)) is None:
            raise
        _fail(err)
    view.summary(outcome.results, out_console)
    out_console.print(f"results: [bold]{outcome.results_path}[/]  HELM run folders: {opts.out / outcome.results['helm_output']}/runs/{safe_name(suite_obj.name)}/")


@app.command()
def suites() -> None:
    """List the built-in suites: runs (after HELM's few-shot expansion), eval instances, the most
    requests they can make (with augmentation), budget and weight."""
    from rich.table import Table

    from effbench.challenge.suites import available_suites, load_suite, suite_size

    table = Table("suite", "entries", "runs", "instances", "requests (at most)", "budget (min)", "weight", "description")
    for name in available_suites():
        s = load_suite(name)
        runs, instances, requests = suite_size(s)
        table.add_row(name, str(len(s.runs)), str(runs), str(instances or "all"), str(requests or "all"),
                      f"{s.budget_minutes:g}", f"{s.weight:.3g}", s.description)
    out_console.print(table)


@app.command()
def rank(
    results: Annotated[list[Path], typer.Argument(help="results.json files, or folders holding one (effbench run's output).")],
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write every value, win rate and score to this JSON file.")] = None,
) -> None:
    """Rank submissions as the NeurIPS 2023 LLM Efficiency Challenge did, each track on its own:
    win rate per metric against the field (missing = 0), mean per scenario, geometric mean per
    suite, weighted sum over suites (open 1/3, closed 2/3). Also prints the Spearman correlation
    of open and closed scores: a negative one means the open winners overfit the open tasks."""
    from effbench.challenge.rank import print_ranking, rank_files, write_json

    try:
        ranking = rank_files(results)
        if json_out is not None:
            write_json(ranking, json_out)
    except EffbenchError as e:
        _fail(e)
    print_ranking(ranking, out_console)
    if json_out is not None:
        console.print(f"ranking written to [bold]{json_out}[/]")


@app.command()
def contamination(
    train_file: Annotated[Path, typer.Argument(help="Training data: .jsonl (string values), .csv/.tsv (cells) or .txt (lines).")],
    suite: Annotated[str, typer.Option(help="Built-in suite name (see scenarios/) or a suite .toml file.")] = "default",
    data_dir: Annotated[Optional[Path], typer.Option(help="Local copies of public datasets (e.g. ../shared/data), as for `effbench run`.")] = None,
    max_eval_instances: Annotated[Optional[int], typer.Option(min=1, help="Instances per run (bounds the suite's), as for `effbench run`.")] = None,
    runs: Annotated[Optional[str], typer.Option(help="Only runs whose name or entry matches this glob.")] = None,
    n: Annotated[int, typer.Option("--n", min=1, help="Words per n-gram (an item shorter than n words counts whole).")] = 13,
    threshold: Annotated[float, typer.Option(help="Flag an item when this fraction of its n-grams is in the training data (0-1].")] = 0.2,
    field: Annotated[Optional[str], typer.Option(help="Only this JSON key / CSV column of the training data.")] = None,
    examples: Annotated[int, typer.Option(min=0, help="Flagged items to show per run (--json has all).")] = 3,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write every count and every overlapping item to this JSON file.")] = None,
) -> None:
    """Which eval items of a suite occur in TRAIN_FILE: per run, the items whose word n-grams
    (13 words, lowercased) are in the training data, with the training line where each was
    found. No model is loaded; the training file is streamed. Details: effbench/challenge/contamination.py."""
    from effbench.challenge.contamination import check_suite, print_report, write_json

    try:
        report = check_suite(train_file, suite, data_dir=data_dir, max_eval_instances=max_eval_instances, run_filter=runs,
                             n=n, threshold=threshold, field_name=field)
        if json_out is not None:
            write_json(report, json_out)
    except EffbenchError as e:
        _fail(e)
    print_report(report, out_console, examples)
    console.print(f"{report.flagged} of {report.eval_items} eval items flagged; {report.examples} training examples"
                  f" scanned in {report.seconds:.1f} s ({report.examples_per_s:,.0f}/s)"
                  + (f"; report written to [bold]{escape(str(json_out))}[/]" if json_out is not None else ""))


@app.command()
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
    allow_pickle: AllowPickle = False,
    trust_remote_code: TrustRemoteCode = False,
    allow_outside_paths: AllowOutsidePaths = False,
) -> None:
    """The pre-submission timeout check: from a short probe, will SUBMISSION finish the suite within
    its budget on the target card, and what is lost if not? Exit 0 PASS, 1 AT RISK, 2 FAIL
    (3: the check itself could not run)."""
    from rich.table import Table

    from effbench.predict.check import check as run_check
    from effbench.merge import default_cache_dir
    from effbench.paths import safe_name
    from effbench.plan import RunOptions
    from effbench.submission import Submission
    from effbench.challenge.suites import load_suite

    try:
        sub = Submission.load(submission, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code,
                              allow_outside_paths=allow_outside_paths)
        sub = sub.with_backend(backend) if backend else sub
        suite_obj = load_suite(suite)
        out = out or Path("effbench-out") / safe_name(f"{sub.name}-{suite_obj.name}-check")
        opts = RunOptions(out=out, max_eval_instances=max_eval_instances, run_filter=runs, cache_dir=cache_dir,
                          data_dir=data_dir, order=order, semantics=semantics, in_process=in_process)
        report = run_check(sub, suite_obj, opts, track=track, probe_fraction=probe, budget_minutes=_minutes(budget),
                           hardware_cache=cache_dir or default_cache_dir())
    except EffbenchError as e:
        console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(3)
    pm = report["projected_minutes"]
    colour = {"PASS": "green", "AT RISK": "yellow", "FAIL": "red"}[report["verdict"]]
    table = Table(title=f"{sub.name} on {report['suite']}, projected on {report['track']}")
    for col in ("run", "requests", "probed", "finish (min)", "answered in budget", "probe score"):
        table.add_column(col, justify="left" if col == "run" else "right", overflow="fold")
    for r in report["runs"]:
        table.add_row(r["name"], str(r["requests"]), str(r["probed"]),
                      "-" if r["projected_finish_min"] is None else f"{r['projected_finish_min']:.2f}",
                      str(r["answered_within_budget"]), "-" if r["probe_score"] is None else f"{r['probe_score']:.3f}")
    out_console.print(table)
    es = report["expected_score"]
    out_console.print(
        f"[bold {colour}]{report['verdict']}[/]: projected {pm['median']:.1f} min (90% interval {pm['p05']:.1f}-{pm['p95']:.1f})"
        f" of {report['budget_minutes']:g} min on {report['track']}; {report['runs_past_budget']} runs /"
        f" {report['items_past_budget']} requests past the budget; expected score {es['if_all_finish']:.4f},"
        f" {es['within_budget']:.4f} within the budget (lost {es['lost']:.4f})", highlight=False)
    pr = report["probe"]
    out_console.print(f"probe: {pr['requests']} of {report['requests']} requests ({pr['fraction']:.1%}), {pr['batches']} batches,"
                      f" {pr['seconds']:.1f} s; whole check {report['check_seconds']:.1f} s", highlight=False)
    out_console.print(f"memory: {report['memory']['summary']}", highlight=False)
    if json_out is not None:
        _write_json_out(json_out, report, exit_code=3)  # 2 is FAIL here
    raise typer.Exit(report["exit_code"])


@app.command()
def serve(
    submission: Annotated[Path, typer.Argument(help="Submission folder (with effbench.toml).")],
    host: Annotated[str, typer.Option(help="Address to listen on. The default serves this machine only; 0.0.0.0 or a public address lets anyone who reaches the port run the model and read its answers (no authentication, no TLS).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port (HELM's HTTPModelClient uses 8080; the challenge's containers 80).")] = 8080,
    max_batch: Annotated[Optional[int], typer.Option(min=1, help="Most requests in one batch. Default: the submission's limits.max_batch_size (also the ceiling).")] = None,
    batch_window_ms: Annotated[float, typer.Option(min=0, help="How long a batch's first request waits for others to join it (milliseconds).")] = 5.0,
    one_at_a_time: Annotated[bool, typer.Option("--one-at-a-time", help="Batches of one, no gathering, no shared-prefix cache, as the challenge's sample servers did (for comparison).")] = False,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Merged-weights cache. Default: $EFFBENCH_CACHE or ~/.cache/effbench.")] = None,
    backend: Annotated[Optional[BackendName], typer.Option(help="Serve with this backend instead of the manifest's (hf, vllm).")] = None,
    max_queue: Annotated[Optional[int], typer.Option(min=1, help="Most requests waiting; past it a request gets 429 with Retry-After. Default: 4 batches, at least 64.")] = None,
    request_timeout: Annotated[float, typer.Option(min=0.001, help="Seconds a request may wait for its answer, queueing included, before a 504 (/health then says degraded while its batch runs on).")] = 600.0,
    allow_pickle: AllowPickle = False,
    trust_remote_code: TrustRemoteCode = False,
    allow_outside_paths: AllowOutsidePaths = False,
) -> None:
    """Serve SUBMISSION over the challenge's HTTP API until Ctrl-C: POST /process (the sample
    servers' and HELM's fields; top_k is accepted and ignored), POST /tokenize, POST /decode,
    GET /health (model, batch statistics). Concurrent requests are gathered into batches; bad
    requests get a 4xx with a JSON {"error": ...}, bodies over 1 MiB a 413. Details: effbench/serve/."""
    try:
        from effbench.serve import serve as run_server

        run_server(submission, host=host, port=port, max_batch=max_batch, window_s=batch_window_ms / 1000,
                   one_at_a_time=one_at_a_time, cache_dir=cache_dir, backend=backend,
                   max_queue=max_queue, request_timeout_s=request_timeout,
                   trust=dict(allow_pickle=allow_pickle, trust_remote_code=trust_remote_code, allow_outside_paths=allow_outside_paths),
                   on_ready=lambda line: console.print(escape(line), highlight=False, soft_wrap=True))
    except EffbenchError as e:
        _fail(e)


@app.command()
def report(
    out: Annotated[Path, typer.Argument(help="Output folder of an `effbench run` (or its results.json).")],
    html: Annotated[bool, typer.Option("--html", help="Also write a self-contained HTML report with plots (opens offline).")] = False,
    html_out: Annotated[Optional[Path], typer.Option("--html-out", help="Where to write the HTML report (implies --html). Default: OUT/report.html.")] = None,
    prediction: Annotated[Optional[Path], typer.Option(help="An `effbench check` folder or its check.json: adds predicted against actual (implies --html).")] = None,
    budgets: Annotated[Optional[str], typer.Option(help="Budgets for the score-against-budget plot, e.g. 1m,5m,30m (implies --html). Default: fractions of the run's execute time and its budget.")] = None,
) -> None:
    """Render a run's results.json again, after checking it against its versioned JSON Schema
    (effbench/schemas/results.schema.json); with --html, also as one HTML file with plots
    (throughput, memory, time per run, score against budget, predicted against actual)."""
    from effbench.report.live import print_summary
    from effbench.results import load_results

    try:
        results = load_results(out)
        minutes = None
        if budgets is not None:
            minutes = [_minutes(b) for b in budgets.split(",") if b.strip()]
            if not minutes or any(m is None or m <= 0 for m in minutes):
                raise EffbenchError(f"--budgets: {budgets!r}: give positive durations, e.g. 1m,5m,30m")
    except EffbenchError as e:
        _fail(e)
    print_summary(results, out_console)
    if not (html or html_out is not None or prediction is not None or budgets is not None):
        return
    from effbench.report.html import write_html_report

    console.print("writing the HTML report (replays the journal at several budgets: a few seconds)", highlight=False)
    try:
        path = write_html_report(out, html_out, prediction=prediction, budgets=minutes)
    except EffbenchError as e:
        _fail(e)
    out_console.print(f"HTML report: {escape(str(path))}", highlight=False, soft_wrap=True)


@app.command()
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
        budgets = [_minutes(b) for b in budget.split(",") if b.strip()]
        if not budgets or any(b is None or b <= 0 for b in budgets):
            raise EffbenchError(f"--budget: {budget!r}: give positive durations, e.g. 30m,60m,300m")
        report = run_simulation(out, budgets, order, semantics)
    except EffbenchError as e:
        _fail(e)
    scenarios = sorted({k for p in report["points"] for k in p["scenario_scores"]})
    table = Table(title=f"{out}: order {report['order']}, semantics {report['semantics']}")
    for col in ("budget (min)", "answered", "runs finished", "suite score", *scenarios):
        table.add_column(col, justify="right")
    for p in report["points"]:
        table.add_row(f"{p['budget_minutes']:g}", f"{p['answered']}/{p['requests']}", f"{p['runs_finished']}/{p['runs']}",
                      f"{p['suite_score']:.4f}", *(f"{p['scenario_scores'].get(k, 0.0):.4f}" for k in scenarios))
    out_console.print(table)
    if json_out is not None:
        _write_json_out(json_out, report)


@app.command()
def kernels(
    full: Annotated[bool, typer.Option("--full", help="Larger sizes and more repetitions.")] = False,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Reuse / store the measurement here (default: measure fresh).")] = None,
) -> None:
    """Measure this machine (copy bandwidth, matmul FLOP/s per dtype, attention) and print its
    profile next to the target cards' datasheets, with the conditions of every measured number."""
    from effbench.predict.hardware import measure_here
    from effbench.predict.kernels.table import print_profile

    print_profile(measure_here(quick=not full, cache_dir=cache_dir), out_console)


@app.command("bench-compare")
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
        _fail(e)
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())

"""`effbench run`: a new run, or `--resume` of one from its output folder (its run_config.json
gives back the options it was started with). The work itself is effbench.runner's."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from effbench.cli.common import AllowOutsidePaths, AllowPickle, TrustRemoteCode, console, duration_minutes, fail, name_library_log, out_console
from effbench.contracts import BackendName, EffbenchError, MissingData, Order, Semantics


def run(
    submission: Annotated[Optional[Path], typer.Argument(help="Submission folder (with effbench.toml); not needed with --resume.")] = None,
    suite: Annotated[str, typer.Option(help="Built-in suite name (see scenarios/) or a suite .toml file; several, comma-separated, run one after the other on one loaded model.")] = "default",
    out: Annotated[Optional[Path], typer.Option(help="Output folder. Default: a new effbench-out/<submission>-<suite>/<date-time>/, with `latest` next to it pointing at the newest. With several suites: one folder per suite inside it.")] = None,
    budget: Annotated[Optional[str], typer.Option(help="Wall-clock budget from the first request: 300m, 90s, 2h (a bare number is minutes), or none. Default: the suite's.")] = None,
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
    shards: Annotated[Optional[int], typer.Option(min=1, help="Split the suite across this many slots of a Ray cluster (effbench fleet), by predicted cost; one results.json merged from the shards'.")] = None,
    address: Annotated[Optional[str], typer.Option(help="With --shards: the Ray cluster ('auto', ray://host:port); default: this machine, one slot per shard.")] = None,
    check_dir: Annotated[Optional[Path], typer.Option("--check", help="With --shards: an `effbench check` output of this submission, whose cost model weighs the runs (default: a roofline of this machine).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="The summary per run, and the libraries' own messages (HELM, transformers, vLLM) on the terminal (default: per scenario group; those messages in OUT/libraries.log).")] = False,
    allow_pickle: AllowPickle = False,
    trust_remote_code: TrustRemoteCode = False,
    allow_outside_paths: AllowOutsidePaths = False,
) -> None:
    """Evaluate SUBMISSION on a suite under a time budget: HELM builds prompts and metrics, effbench
    batches the requests through the submission's backend (in a worker process it can stop at the
    deadline), journals every result, and writes results.json and HELM run folders."""
    from effbench.quiet import LIBRARY_LOG, libraries_logged_to
    from effbench.report.live import LiveView
    from effbench.paths import safe_name
    from effbench.plan import RunOptions, check_run_filter
    from effbench.results import finished_run, save_run_config
    from effbench.execute.worker import BackendWorker
    from effbench.runner import resumed_run, run_suite
    from effbench.submission import Submission
    from effbench.challenge.suites import load_suite

    opts = None
    try:
        if resume is not None:
            if out is not None and Path(os.path.abspath(out)) != Path(os.path.abspath(resume)):
                raise EffbenchError(f"--out {out} with --resume {resume}: a resumed run continues in its own folder;"
                                    " give only --resume")
            if (done := finished_run(resume)) is not None:
                t = done["totals"]
                out_console.print(f"{resume}: this run has finished ({t['answered']} of {t['requests']} requests answered,"
                                  f" results.json of {done['created']}); nothing to resume", highlight=False, soft_wrap=True)
                return
            sub, suite, opts = resumed_run(resume)
        elif submission is None:
            raise EffbenchError("run: give a SUBMISSION folder, or --resume OUT to continue a run")
        else:
            sub = Submission.load(submission, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code,
                                  allow_outside_paths=allow_outside_paths)
            if backend is not None:
                sub = sub.with_backend(backend)
        names = [n.strip() for n in suite.split(",") if n.strip()] if resume is None else [suite]
        if shards is not None:
            return _sharded(sub, names, out, shards, address, check_dir, verbose, RunOptions(
                out=out or Path("effbench-out") / safe_name(f"{sub.name}-{names[0]}-shards"), max_eval_instances=max_eval_instances,
                run_filter=runs, cache_dir=cache_dir, data_dir=data_dir, missing_data=missing_data, track=track,
                budget_minutes=duration_minutes(budget), order=order, semantics=semantics), resume is not None)
        suites = [(n, load_suite(n)) for n in names]  # every suite checked before anything runs
        for _, suite_def in suites:
            check_run_filter(suite_def, runs if resume is None else opts.run_filter)
        if len({s.name for _, s in suites}) < len(suites):
            raise EffbenchError(f"--suite {suite}: a suite named twice (each writes its own output folder)")
        planned = []
        if resume is not None:
            planned.append((suites[0][1], opts))
        else:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            for name, suite_obj in suites:
                if out is None:  # a new folder per run (a rerun never replaces one), `latest` pointing at it
                    where = Path("effbench-out") / safe_name(f"{sub.name}-{suite_obj.name}") / stamp
                else:  # several suites: one folder each inside --out
                    where = out if len(suites) == 1 else out / safe_name(suite_obj.name)
                planned.append((suite_obj, RunOptions(
                    out=where, max_eval_instances=max_eval_instances, run_filter=runs, cache_dir=cache_dir, data_dir=data_dir,
                    missing_data=missing_data, track=track, budget_minutes=duration_minutes(budget), order=order,
                    semantics=semantics, in_process=in_process)))
            for (name, _), (_, opts) in zip(suites, planned):  # `opts`: the folder an OSError below names
                save_run_config(opts, sub, name, overwrite=overwrite)
                if out is None:
                    point_latest(opts.out)
        # several suites share one backend worker: the model loads once (runner.run_suite)
        shared = BackendWorker(sub, cache_dir) if len(planned) > 1 and not in_process else None
        try:
            for suite_obj, opts in planned:
                with libraries_logged_to(None if verbose else opts.out / LIBRARY_LOG) as log:
                    with LiveView(console, suite_obj) as view:
                        outcome = run_suite(sub, suite_obj, opts, view.progress, worker=shared)
                view.summary(outcome.results, out_console, verbose)
                out_console.print(f"results: [bold]{outcome.results_path}[/]  HELM run folders:"
                                  f" {opts.out / outcome.results['helm_output']}/runs/{safe_name(suite_obj.name)}/")
                name_library_log(log)
        finally:
            if shared is not None:
                shared.close()
    except EffbenchError as e:
        fail(e)
    except OSError as e:  # writing into --out: a file, read-only or full (HELM's own writes land here)
        from effbench.execute.journal import out_error

        if opts is None or (err := out_error(opts.out, e)) is None:
            raise
        fail(err)


def _sharded(sub, names: list[str], out, shards: int, address, check, verbose: bool, opts, resuming: bool) -> None:
    """`run --shards N`: effbench/fleet/shards.py; run again with the same --out to resume."""
    from effbench.fleet.shards import run_sharded
    from effbench.report.summary import print_summary
    from effbench.results import load_results

    if resuming or len(names) != 1:
        raise EffbenchError("--shards: one suite, and no --resume (run the same command again to resume the shards)")
    suite_ref = str(Path(names[0]).resolve()) if names[0].endswith(".toml") else names[0]
    trust = {"allow_pickle": sub.allow_pickle, "trust_remote_code": sub.trust_remote_code,
             "allow_outside_paths": sub.allow_outside_paths}
    path = run_sharded(sub.folder, suite_ref, opts, shards, address=address, check=check, trust=trust,
                       echo=lambda line: console.print(line, highlight=False, markup=False, soft_wrap=True))
    print_summary(load_results(path), out_console, verbose)
    out_console.print(f"results: [bold]{path}[/] (merged from {shards} shards)")


def point_latest(folder: Path) -> None:
    """FOLDER/../latest -> FOLDER (a relative link, replaced in one step): the newest run of a
    submission and suite, for --resume, report and simulate."""
    link = folder.parent / "latest"
    tmp = folder.parent / f".latest.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    os.symlink(folder.name, tmp)
    os.replace(tmp, link)

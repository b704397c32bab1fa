"""`effbench run`: plan every HELM run, execute all requests through the scheduler, score, write
results.json. The short orchestration of plan.py, execute/, score.py and results.py.

Phases, each timed: plan (HELM steps 1-4 for all runs; the backend worker starts loading the
model as soon as the data checks pass), load (what is left of it), execute (scheduler ->
backend), score (HELM metrics, run folders), then results.json.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from effbench.backends import make_backend
from effbench.challenge.suites import Suite
from effbench.contracts import EffbenchError, GenerationRequest
from effbench.execute.journal import (JOURNAL_NAME, Journal, budget_timeline, fingerprint_changes, plan_digest, read_journal,
                                      submission_fingerprint)
from effbench.execute import cpu
from effbench.execute.executor import InProcess
from effbench.execute.scheduler import Scheduler
from effbench.execute.signals import StopSignals
from effbench.execute.worker import BackendWorker
from effbench.plan import Progress, RunOptions, plan_suite, prompt_shapes
from effbench.predict.profiler import Telemetry
from effbench.results import build_results, write_results
from effbench.score import not_run_records, score_runs
from effbench.submission import Submission


@dataclass
class Phase:
    name: str
    start: float
    end: float = 0.0

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class RunOutcome:
    results: dict
    results_path: Path
    phases: list[Phase] = field(default_factory=list)


def run_suite(submission: Submission, suite: Suite, opts: RunOptions, progress: Progress | None = None,
              worker: BackendWorker | None = None) -> RunOutcome:
    """One suite: plan -> execute -> score -> results.json. `worker`: a backend worker shared by
    several suites of one command (run_suites): launched by the first that needs it, reused while
    alive (the model loads once), left running for the next; the caller closes it."""
    from effbench.challenge.helm_bridge import HelmSession, ensure_nltk_punkt_tab
    from effbench.paths import default_cache_dir

    progress = progress or Progress()
    phases: list[Phase] = []

    def phase(name: str) -> Phase:
        if phases and not phases[-1].end:
            phases[-1].end = time.time()
        progress.on_phase(name)
        phases.append(Phase(name, time.time()))
        return phases[-1]

    opts.out.mkdir(parents=True, exist_ok=True)
    sampler = Telemetry()
    stop = StopSignals()  # SIGINT/SIGTERM: abort until execution starts, then a clean stop (see StopSignals)
    with sampler, stop:
        phase("plan")
        submission = submission.fetch_hub_base()
        shared = worker is not None
        if not shared:
            worker = None if opts.in_process else BackendWorker(submission, opts.cache_dir)
        journal = None
        try:  # until execution starts: on any failure, stop the worker and close the journal, then re-raise
            session = HelmSession(opts.out / "helm", suite.name, parallelism=opts.parallelism,
                                  instance_cache=(opts.cache_dir or default_cache_dir()) / "helm-instances")
            # once the data checks pass, the worker merges and loads the model while HELM builds requests
            launched: list[float] = []  # when the worker was launched, for results.json

            def launch() -> None:
                if worker.alive:  # shared, and loaded by an earlier suite
                    return
                launched.append(time.time())
                worker.launch()

            plan = plan_suite(submission, suite, opts, session, progress, on_data_checked=launch if worker else None)
            # after the worker's launch (importing nltk takes ~1.5 s), before HELM's metric modules load
            ensure_nltk_punkt_tab(opts.cache_dir or default_cache_dir())
            requests = plan.requests(suite.name)
            progress.on_plan({p.name: len(p.request_states) for p in plan.plans})

            journal, done, spent = _open_journal(opts, submission, suite, requests)
            todo = [r for r in requests if r.id not in done]
            todo, lengths, prefixes = prompt_shapes(submission, todo)  # each prompt tokenized once, here
            budget_min = suite.budget_minutes if opts.budget_minutes is None else opts.budget_minutes
            budget_s = budget_min * 60 - spent if budget_min and budget_min > 0 else None

            phase("load")  # what is left of it after planning
            executor = InProcess(make_backend(submission, cache_dir=opts.cache_dir)) if worker is None else worker
            info = start_executor(executor, launched=worker is not None)
        except BaseException:
            if worker is not None and not shared:
                worker.kill()  # a no-op where it was not launched yet
            if journal is not None:
                journal.close()
            raise
        try:
            phase("execute")
            stop.arm()  # from here on, results.json is written whatever happens
            progress.on_execute(budget_s, len(todo), sampler)
            report = Scheduler(executor, submission.manifest.limits.max_batch_size, stop=stop.requested).execute(
                todo, lengths, order=opts.order, budget_s=budget_s, journal=journal, on_batch=progress.on_batch,
                groups=prefixes,
            )
            phases[-1].end = time.time()
            if stop.requested():
                report.stopped = f"interrupted by {stop.name}"
                progress.on_warning(f"{report.stopped}: scoring what was answered; `effbench run --resume {opts.out}` continues")
            allocator = executor.allocator_stats() if isinstance(executor, BackendWorker) else {"source": "in-process"}
        finally:
            if not shared:
                executor.close()
            journal.close()
        results = {**done, **report.results}

        phase("score")
        runs = score_runs(plan, suite, session, results, opts, sampler)
        runs += not_run_records(plan, suite)
        order = {entry: i for i, (entry, _) in enumerate(suite.entries())}
        runs.sort(key=lambda r: order[r["entry"]])
        phases[-1].end = time.time()

    out = build_results(submission, suite, opts, plan.staged, info=info, launched=launched, shared=shared, phases=phases,
                        budget_min=budget_min, report=report, spent=spent, resumed=len(done), runs=runs, sampler=sampler,
                        allocator=allocator)
    path = write_results(opts.out, out)
    if stop.requested():  # results.json is written: now end as the signal asked (non-zero exit)
        raise KeyboardInterrupt
    return RunOutcome(out, path, phases)


def resumed_run(out: Path) -> tuple[Submission, str, RunOptions]:
    """The submission, suite reference and options of the run in OUT, as its run_config.json
    keeps them, for a --resume (the command line's and a fleet task's after a retry)."""
    from effbench.results import load_run_config

    config = load_run_config(out)  # options.out is `out` as given, wherever the folder is now
    sub = Submission.load(Path(config["submission"]), allow_pickle=config["allow_pickle"],
                          trust_remote_code=config["trust_remote_code"],
                          allow_outside_paths=config.get("allow_outside_paths", False))
    if config.get("backend"):
        sub = sub.with_backend(config["backend"])
    return sub, config["suite"], RunOptions.from_json({**config["options"], "resume": True})


def start_executor(executor, launched: bool = False) -> dict:
    if isinstance(executor, InProcess):
        be = executor.backend
        be.start()
        # in this process: its policy is what the command line set before anything loaded torch
        return {"name": be.name, "model_dir": str(be.model_dir), "merged_now": be.merged_now, "device": be.device,
                "load_seconds": be.load_seconds, "merge_seconds": be.merge_seconds, "warm_up_seconds": 0.0,
                "cpu": cpu.policy_report(cpu.set_wait_policy(), [])}
    w = executor.info if executor.info is not None and executor.alive else (executor.wait_ready() if launched else executor.start())
    return {"name": w.name, "model_dir": w.model_dir, "merged_now": w.merged_now, "device": w.device,
            "load_seconds": w.load_seconds, "merge_seconds": w.merge_seconds, "warm_up_seconds": w.warm_up_seconds,
            "cpu": w.cpu}


def _open_journal(opts: RunOptions, submission: Submission, suite: Suite, requests: list[GenerationRequest]):
    """(journal, results already journaled, seconds of budget already spent). On --resume the
    journal must be of this plan and this submission: anything else is refused, saying what
    changed, before anything runs."""
    path = opts.out / JOURNAL_NAME
    fingerprint = submission_fingerprint(submission)
    if not opts.resume:
        header = {"plan_digest": plan_digest(requests), "fingerprint": fingerprint, "submission": submission.name,
                  "suite": suite.name, "requests": len(requests)}
        return Journal(path, header), {}, 0.0
    header, prior, events = read_journal(path)
    again = "start a new --out instead of --resume"
    if header.get("suite", suite.name) != suite.name:
        raise EffbenchError(f"{path}:1: field 'suite': the journal is of suite {header['suite']!r}, this plan of"
                            f" {suite.name!r}; {again}")
    if header["plan_digest"] != plan_digest(requests, header["version"]):
        count = header.get("requests")
        n = f" ({len(requests)} requests now, {count} when the run started)" if count not in (None, len(requests)) else ""
        raise EffbenchError(f"{path}:1: field 'plan_digest': the requests differ (suite, options or data changed){n};"
                            f" {again}")
    if "fingerprint" not in header:  # version 1: accepted, the plan digest still matched
        warnings.warn(f"{path}:1: a journal of an older effbench (version {header['version']}) has no fingerprint"
                      " of the submission: not checked that it is unchanged")
    elif changes := fingerprint_changes(header["fingerprint"], fingerprint):
        more = f" and {len(changes) - 3} more" if len(changes) > 3 else ""
        raise EffbenchError(f"{path}:1: field 'fingerprint': the submission changed since the run started:"
                            f" {', '.join(changes[:3])}{more}; restore it, or {again}")
    _, spent = budget_timeline(prior, events)
    # a failed result (a crashed worker's batch, a backend error) is tried again
    return Journal(path, header, append=True), {r.request_id: r for r in prior if r.ok}, spent

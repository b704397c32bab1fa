"""`effbench run`: load, plan every HELM run, execute all requests through the scheduler, score.

Phases, each timed: load (merge + model load), plan (HELM steps 1-4 for all runs), execute
(scheduler -> backend), score (HELM metrics, run folders), then results.json.
"""

from __future__ import annotations

import fnmatch
import json
import os
import platform
import time
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable

from effbench import __version__
from effbench.backends import make_backend
from effbench.contracts import EffbenchError, GenerationRequest, GenerationResult
from effbench.profiler import Telemetry, run_performance
from effbench.atomic import write_json_atomic
from effbench.journal import (JOURNAL_NAME, Journal, budget_timeline, fingerprint_changes, journaled_results, out_error,
                              plan_digest, read_journal, submission_fingerprint)
from effbench.scheduler import InProcess, Scheduler, StopSignals
from effbench.worker import BackendWorker
from effbench.submission import Submission
from effbench.suites import Suite

RESULTS_SCHEMA_VERSION = 1
# Main metric per run: the first of these HELM stats present on the test split, unperturbed.
MAIN_METRICS = (
    "exact_match",
    "quasi_exact_match",
    "exact_match_indicator",
    "final_number_exact_match",
    "math_equiv_chain_of_thought",
    "rouge_2",
    "f1_set_match",
    "f1_score",
)


@dataclass
class RunOptions:
    out: Path
    max_eval_instances: int | None = None
    run_filter: str | None = None  # glob on run names or entries, e.g. "synthetic_reasoning*"
    cache_dir: Path | None = None
    data_dir: Path | None = None  # local copies of public datasets (effbench.data); implies offline
    missing_data: str = "auto"  # auto | skip | stop (see _data_problem)
    track: str = "local"  # the hardware track this run stands for (effbench rank groups by it)
    budget_minutes: float | None = None  # None: the suite's own; 0 or less: no deadline
    order: str = "effbench"  # effbench | helm (see scheduler)
    semantics: str = "item"  # item | helm (see _score_runs)
    in_process: bool = False  # backend in this process: faster start, but no deadline enforcement
    resume: bool = False  # continue from OUT/journal.jsonl
    parallelism: int = 4

    def to_json(self) -> dict:
        """For run_config.json: without `out` (the folder is wherever it is now: --resume takes
        it from the command line) and without `resume`; paths as _config_path stores them."""
        return {k: (_config_path(v, self.out) if isinstance(v, Path) else v) for k, v in self.__dict__.items()
                if k not in ("out", "resume")}

    @classmethod
    def from_json(cls, d: dict) -> "RunOptions":
        paths = {"out", "cache_dir", "data_dir"}
        return cls(**{k: (Path(v) if k in paths and v is not None else v) for k, v in d.items()})


RUN_CONFIG = "run_config.json"
# 2: options.out is not stored; a path inside the output folder is stored relative to it, any
# other absolute. Version 1 (no "version" key) stored every path as given on the command line.
RUN_CONFIG_VERSION = 2
_CONFIG_PATHS = ("cache_dir", "data_dir")


def _config_path(path: Path, out: Path) -> str:
    """A path for run_config.json: relative to OUT when inside it (the folder may be moved or
    copied, and a resume must never write into the old place), else absolute (a resume may run
    from another working directory)."""
    p, root = Path(os.path.abspath(path)), Path(os.path.abspath(out))
    return str(p.relative_to(root)) if p == root or root in p.parents else str(p)


def save_run_config(opts: RunOptions, submission: Submission, suite: str, overwrite: bool = False) -> None:
    """What `--resume` needs to rebuild the same plan: written before the first request. The
    command line's trust flags are kept, so a resume allows exactly what the start allowed.
    A folder that holds an earlier run's journal is refused unless `overwrite`: starting again
    would empty it (its results are the hours a --resume would keep)."""
    journal = opts.out / JOURNAL_NAME
    if journal.is_file() and not overwrite:
        raise EffbenchError(f"{opts.out} holds the journal of an earlier run ({journaled_results(journal)} results):"
                            f" use --resume {opts.out} to continue it, or --overwrite to start again")
    opts.out.mkdir(parents=True, exist_ok=True)
    suite_ref = _config_path(Path(suite).resolve(), opts.out) if suite.endswith(".toml") else suite
    write_json_atomic(opts.out / RUN_CONFIG, {
        "version": RUN_CONFIG_VERSION,
        "submission": _config_path(submission.folder, opts.out), "suite": suite_ref, "backend": submission.manifest.backend,
        "allow_pickle": submission.allow_pickle, "trust_remote_code": submission.trust_remote_code,
        "allow_outside_paths": submission.allow_outside_paths, "options": opts.to_json(),
    })


def load_run_config(out: Path) -> dict:
    """run_config.json of the run in OUT, with OUT as given (relative or absolute, wherever the
    folder is now) as options.out, never a path stored in it; relative paths resolved against it."""
    path = out / RUN_CONFIG
    if not path.is_file():
        raise EffbenchError(f"{path}: missing; --resume needs the folder of a run started by effbench run")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise EffbenchError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if config.get("version", 1) >= 2:  # version 1: paths as given on the command line that started it
        inside = lambda v: str(out / v) if v is not None and not Path(v).is_absolute() else v  # noqa: E731
        config["submission"] = inside(config["submission"])
        if config["suite"].endswith(".toml"):
            config["suite"] = inside(config["suite"])
        config["options"] = {**config["options"], **{k: inside(config["options"].get(k)) for k in _CONFIG_PATHS}}
    config["options"] = {**config["options"], "out": str(out)}
    return config


@dataclass
class Progress:
    """Callbacks for a live view; all optional."""

    on_phase: Callable[[str], None] = lambda phase: None
    on_plan: Callable[[dict[str, int]], None] = lambda requests_per_run: None
    on_batch: Callable[[list[GenerationRequest], list[GenerationResult]], None] = lambda reqs, res: None
    on_warning: Callable[[str], None] = lambda line: None
    # execution starts: (seconds of budget left or None, total requests to run, telemetry sampler)
    on_execute: Callable[[float | None, int, "Telemetry"], None] = lambda budget_s, n, sampler: None


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


def _main_metric(stats) -> tuple[str | None, float | None]:
    by_name = {}
    for s in stats:
        n = s.name
        if n.perturbation is None and n.sub_split is None and n.split in ("test", "valid") and s.count > 0:
            by_name.setdefault(n.name, s.mean)
    for m in MAIN_METRICS:
        if m in by_name:
            return m, by_name[m]
    return None, None


def environment(device: str) -> dict:
    def v(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    env = {
        "effbench": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "versions": {d: v(d) for d in ("crfm-helm", "torch", "transformers", "peft", "tokenizers", "bitsandbytes")},
        "device": device,
    }
    if device == "cuda":
        import torch

        env["gpu"] = torch.cuda.get_device_name(0)
    return env


@dataclass
class SuitePlan:
    """Every run of a suite after HELM's planning: what will run, what cannot and why."""

    specs: list  # (entry, RunSpec) after the run filter
    plans: list  # helm_bridge.RunPlan of each runnable run
    not_run: dict[str, str]  # run (or entry) name -> why it cannot run
    notes: dict[str, list[str]]  # run name -> what offline mode changed
    staged: list[str]  # datasets linked from --data-dir

    def requests(self, suite_name: str) -> list[GenerationRequest]:
        from effbench.helm_bridge import to_generation_request

        return [to_generation_request(st, suite_name, p.name, i) for p in self.plans for i, st in enumerate(p.request_states)]


def plan_suite(submission: Submission, suite: Suite, opts: RunOptions, session, progress: Progress,
               on_data_checked: Callable[[], None] | None = None) -> SuitePlan:
    """Everything HELM does before the first request, and every data check, with no model
    loaded: a missing file costs seconds, not a model load. `on_data_checked` runs once every
    check has passed, before HELM builds the instances and requests (the slow part): run_suite
    starts loading the model there."""
    from effbench.helm_bridge import adapt_offline, helm_model_name, parse_entry, register_model, stage_perturbation_resources

    helm_dir = session.helm_dir
    staged: list[str] = []
    if opts.data_dir is not None:
        from effbench.data import stage

        staged = stage(opts.data_dir, helm_dir)
        stage_perturbation_resources(opts.data_dir, helm_dir)
    if submission.tokenizer_dir is None:  # a remote server: HELM will tokenize through it, so it must answer now
        from effbench.backends.http import HTTPBackend

        probe = HTTPBackend(submission)
        probe.start()
        probe.close()
    helm_name = helm_model_name(submission.name)
    register_model(helm_name, submission.tokenizer_dir, submission.manifest.limits.max_sequence_length, submission.manifest.endpoint,
                   trust_remote_code=submission.trust_remote_code)

    not_run: dict[str, str] = {}
    entries = []
    for entry, n in suite.entries():
        fn, args = parse_entry(entry)
        if opts.run_filter and not _may_match(opts.run_filter, entry, fn):
            continue
        reason = _data_problem(entry, fn, args, helm_dir, staged, opts) if opts.data_dir else None
        if reason is not None:  # the run spec itself would need the data (BIG-bench)
            not_run[entry] = reason
            continue
        entries.append((entry, n))
    specs = session.run_specs(entries, helm_name, suite.max_eval_instances, opts.max_eval_instances)
    if opts.run_filter:
        match = lambda name, entry: fnmatch.fnmatch(name, opts.run_filter) or fnmatch.fnmatch(entry, opts.run_filter)  # noqa: E731
        specs = [(e, s) for e, s in specs if match(s.name, e)]
        not_run = {k: v for k, v in not_run.items() if match(k, k)}
        if not specs and not not_run:
            raise EffbenchError(f"--runs: pattern {opts.run_filter!r} matches no run of suite {suite.name}")

    notes: dict[str, list[str]] = {}
    runnable = []
    for entry, spec in specs:
        if opts.data_dir is not None:
            spec, notes[spec.name] = adapt_offline(spec, helm_dir)
            sc = spec.scenario_spec
            reason = _data_problem(spec.name, sc.class_name, sc.args, helm_dir, staged, opts)
            if reason is not None:
                not_run[spec.name] = reason
                continue
        runnable.append((entry, spec))
    for line in not_run.values():
        progress.on_warning(f"not run: {line}")
    if on_data_checked is not None:
        on_data_checked()
    plans = [session.plan_run(entry, spec) for entry, spec in runnable]
    return SuitePlan(specs, plans, not_run, notes, staged)


def run_suite(submission: Submission, suite: Suite, opts: RunOptions, progress: Progress | None = None) -> RunOutcome:
    from effbench.helm_bridge import HelmSession, ensure_nltk_punkt_tab, fill
    from effbench.merge import default_cache_dir

    progress = progress or Progress()
    phases: list[Phase] = []

    def phase(name: str) -> Phase:
        if phases and not phases[-1].end:
            phases[-1].end = time.time()
        progress.on_phase(name)
        phases.append(Phase(name, time.time()))
        return phases[-1]

    opts.out.mkdir(parents=True, exist_ok=True)
    ensure_nltk_punkt_tab(opts.cache_dir or default_cache_dir())
    sampler = Telemetry()
    stop = StopSignals()  # SIGINT/SIGTERM: abort until execution starts, then a clean stop (see StopSignals)
    with sampler, stop:
        phase("plan")
        submission = submission.fetch_hub_base()
        worker = None if opts.in_process else BackendWorker(submission, opts.cache_dir)
        journal = None
        try:  # until execution starts: on any failure, stop the worker and close the journal, then re-raise
            session = HelmSession(opts.out / "helm", suite.name, parallelism=opts.parallelism)
            # once the data checks pass, the worker merges and loads the model while HELM builds requests
            launched: list[float] = []  # when the worker was launched, for results.json

            def launch() -> None:
                launched.append(time.time())
                worker.launch()

            plan = plan_suite(submission, suite, opts, session, progress, on_data_checked=launch if worker else None)
            requests = plan.requests(suite.name)
            progress.on_plan({p.name: len(p.request_states) for p in plan.plans})

            journal, done, spent = _open_journal(opts, submission, suite, requests)
            todo = [r for r in requests if r.id not in done]
            lengths, prefixes = _prompt_shapes(submission, todo)
            budget_min = suite.budget_minutes if opts.budget_minutes is None else opts.budget_minutes
            budget_s = budget_min * 60 - spent if budget_min and budget_min > 0 else None

            phase("load")  # what is left of it after planning
            executor = InProcess(make_backend(submission, cache_dir=opts.cache_dir)) if worker is None else worker
            info = _start(executor, launched=worker is not None)
        except BaseException:
            if worker is not None:
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
            executor.close()
            journal.close()
        results = {**done, **report.results}

        phase("score")
        runs = _score_runs(plan, suite, session, results, opts, sampler)
        entry_of = {spec.name: entry for entry, spec in plan.specs} | {e: e for e, _ in suite.entries()}
        runs += [_not_run_record(name, entry_of[name], suite, why) for name, why in plan.not_run.items()]
        order = {entry: i for i, (entry, _) in enumerate(suite.entries())}
        runs.sort(key=lambda r: order[r["entry"]])
        phases[-1].end = time.time()

    execute = next(p for p in phases if p.name == "execute")
    groups = sorted({r["scenario"] for r in runs})
    out = {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "track": opts.track,
        "submission": {"name": submission.name, "folder": str(submission.folder), "manifest": submission.manifest.model_dump()},
        "backend": {"name": info["name"], "model_dir": info["model_dir"], "merged_this_run": info["merged_now"],
                    "device": info["device"], "load_seconds": round(info["load_seconds"], 3),
                    "merge_seconds": round(info["merge_seconds"], 3), "warm_up_seconds": round(info["warm_up_seconds"], 3),
                    "process": "in-process" if opts.in_process else "worker",
                    # seconds into the plan phase when the worker started loading (it overlaps planning)
                    "launched_after_s": round(launched[0] - phases[0].start, 3) if launched else None},
        "budget": {
            "minutes": budget_min if budget_min and budget_min > 0 else None,
            "order": opts.order,
            "semantics": opts.semantics,
            "deadline_hit": report.deadline_hit,
            "elapsed_s": round(spent + report.ended - report.started, 3),
            "cancelled": len(report.cancelled),
            "not_started": len(report.not_started),
            "worker_restarts": report.restarts,
            "crashes": report.crashes,
            "stopped": report.stopped,
            "resumed_results": len(done),
            "journal": JOURNAL_NAME,  # relative to the output folder, as every path in it: the folder may move
        },
        "suite": {
            "name": suite.name,
            "budget_minutes": suite.budget_minutes,
            "weight": suite.weight,
            "max_eval_instances": suite.max_eval_instances,
            "max_eval_instances_cap": opts.max_eval_instances,
            "scenarios": {g: _columns_of(suite, g, runs).model_dump() for g in groups if _columns_of(suite, g, runs)},
        },
        "runs": runs,
        "totals": _totals(runs, execute.seconds, sampler),
        "phases": {p.name: round(p.seconds, 3) for p in phases},
        "memory_source": "nvml" if sampler.source == "nvml" else "rss",
        "profile": {"source": sampler.source,
                    "phases": {p.name: sampler.summary(p.start, p.end) for p in phases},
                    "allocator": allocator},
        "timeline": sampler.timeline(phases[0].start),
        "environment": environment(info["device"]),
        "data_dir": str(opts.data_dir) if opts.data_dir else None,
        "datasets_staged": plan.staged,
        "helm_output": "helm",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    path = opts.out / "results.json"
    try:
        write_json_atomic(path, out)
    except OSError as e:  # a full or read-only disk: the journal keeps the results, say so
        if (err := out_error(opts.out, e)) is None:
            raise
        raise err from e
    if stop.requested():  # results.json is written: now end as the signal asked (non-zero exit)
        raise KeyboardInterrupt
    return RunOutcome(out, path, phases)


def _start(executor, launched: bool = False) -> dict:
    if isinstance(executor, InProcess):
        be = executor.backend
        be.start()
        return {"name": be.name, "model_dir": str(be.model_dir), "merged_now": be.merged_now, "device": be.device,
                "load_seconds": be.load_seconds, "merge_seconds": be.merge_seconds, "warm_up_seconds": 0.0}
    w = executor.wait_ready() if launched else executor.start()
    return {"name": w.name, "model_dir": w.model_dir, "merged_now": w.merged_now, "device": w.device,
            "load_seconds": w.load_seconds, "merge_seconds": w.merge_seconds, "warm_up_seconds": w.warm_up_seconds}


def _prompt_shapes(submission: Submission, requests: list[GenerationRequest]) -> tuple[dict[str, int], dict]:
    """(prompt tokens per request, prefix groups): what the scheduler batches and orders by."""
    from effbench.scheduler import prefix_groups

    ids = _prompt_tokens(submission, requests)
    return {i: len(t) for i, t in ids.items()}, prefix_groups(requests, ids)


def _prompt_tokens(submission: Submission, requests: list[GenerationRequest]) -> dict[str, list[int]]:
    """Prompt token ids of every request, with the submission's own tokenizer (for batching and
    prefix groups); a remote server's through its /tokenize."""
    if submission.tokenizer_dir is None:
        from concurrent.futures import ThreadPoolExecutor

        from effbench.backends.http import HTTPBackend

        remote = HTTPBackend(submission)
        remote.start()
        try:
            with ThreadPoolExecutor(8) as pool:
                tokens = list(pool.map(lambda r: list(remote.tokenize(r.prompt)), requests))
        finally:
            remote.close()
        return {r.id: t for r, t in zip(requests, tokens)}
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(submission.tokenizer_dir), local_files_only=True,
                                        trust_remote_code=submission.trust_remote_code)
    ids = tok([r.prompt for r in requests], add_special_tokens=True)["input_ids"] if requests else []
    return {r.id: x for r, x in zip(requests, ids)}


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


def _score_runs(plan, suite: Suite, session, results: dict[str, GenerationResult], opts: RunOptions, sampler) -> list[dict]:
    """HELM's metrics per run, under the chosen semantics for what was not answered:
    - helm (the challenge's): a run with any request unanswered or failed is lost whole; HELM
      writes nothing for it and all its metrics count as zero;
    - item: an unanswered request gets an empty completion (flagged with an error) and HELM scores
      it (zero for the exact-match family); answered items keep their scores."""
    from effbench.helm_bridge import fill, unanswered_result

    runs = []
    for p in plan.plans:
        ids = [f"{p.name}#{i}" for i in range(len(p.request_states))]
        got = [results.get(i) for i in ids]
        answered = sum(1 for r in got if r is not None and r.ok)
        failed = sum(1 for r in got if r is not None and not r.ok)
        missing = len(ids) - answered - failed
        status = "finished" if missing == 0 else ("not_started" if answered + failed == 0 else "partial")
        counts = {"answered": answered, "failed": failed, "unanswered": missing}
        notes = plan.notes.get(p.name, [])
        if opts.semantics == "helm" and (missing or failed):
            why = "a request failed" if missing == 0 else "not finished by the deadline"
            runs.append(_lost_record(p, suite, status if missing else "failed", why, counts, [r for r in got if r], notes))
            continue
        filled = [r if r is not None else unanswered_result(i) for i, r in zip(ids, got)]
        stats, run_path = session.score_run(p, [fill(st, r) for st, r in zip(p.request_states, filled)])
        rec = _run_record(p, suite, [r for r in got if r is not None], stats, run_path, sampler, opts.out, notes)
        rec.update(status=status, **counts)
        runs.append(rec)
    return runs


def _lost_record(p, suite: Suite, status: str, why: str, counts: dict, got: list[GenerationResult], notes: list[str]) -> dict:
    rec = _not_run_record(p.name, p.entry, suite, f"lost whole under the challenge's rule: {why}")
    rec.update(status=status, requests=len(p.request_states), **counts,
               prompt_tokens=sum(r.prompt_tokens for r in got), output_tokens=sum(r.output_tokens for r in got), notes=notes)
    return rec


def _may_match(pattern: str, entry: str, fn: str) -> bool:
    """Whether an entry can yield a run matching --runs: by its text, or by its run spec function
    (HELM's run names start with it), so the data of filtered-out entries is not asked for."""
    head = pattern.split(":", 1)[0].split(",", 1)[0]
    return fnmatch.fnmatch(entry, pattern) or fnmatch.fnmatch(fn, head)


def _data_problem(name: str, class_name: str, args: dict, helm_dir: Path, staged: list[str], opts: RunOptions) -> str | None:
    """Why a run cannot run on the local data, or None. A dataset that is absent altogether
    stops the run (policy "auto"); one that is present but incomplete (BBQ with 6 of its 11
    categories) only costs its runs, which are recorded as not run."""
    from effbench.data import missing_inputs

    miss = missing_inputs(class_name, args, helm_dir)
    if miss is None:
        return None
    policy = opts.missing_data
    if policy == "stop" or (policy == "auto" and miss.dataset not in staged):
        raise EffbenchError(miss.line(name))
    return miss.line(name)


def _columns_of(suite: Suite, group: str, runs: list[dict]):
    main = next((r["main_metric"] for r in runs if r["scenario"] == group and r["main_metric"]), None)
    return suite.columns(group, main)


def _metric_columns(stats, columns: list[str]) -> dict[str, float | None]:
    """HELM stats -> the suite's columns: `metric` is the unperturbed value on the eval split,
    `metric@robustness` / `metric@fairness` the worst case over that kind of perturbation."""
    found: dict[str, float] = {}
    for s in stats:
        n = s.name
        if n.sub_split is not None or n.split not in ("test", "valid") or s.count == 0:
            continue
        if n.perturbation is None:
            key = n.name
        elif n.perturbation.computed_on == "worst" and n.perturbation.name in ("robustness", "fairness"):
            key = f"{n.name}@{n.perturbation.name}"
        else:
            continue
        found.setdefault(key, s.mean)  # the test split comes before valid in HELM's stats
    return {c: found.get(c) for c in columns}


def _not_run_record(name: str, entry: str, suite: Suite, reason: str) -> dict:
    group = suite.group_of(entry)
    cols = suite.columns(group, None)
    return {
        "name": name, "entry": entry, "scenario": group, "status": "not_run", "reason": reason,
        "main_metric": cols.metrics[0] if cols else None, "score": 0.0,
        "metrics": {c: None for c in (cols.metrics if cols else [])},
        "requests": 0, "answered": 0, "failed": 0, "unanswered": 0, "errors": 0, "first_error": None,
        "prompt_tokens": 0, "output_tokens": 0,
        "wall_seconds": 0.0, "busy_seconds": 0.0, "tokens_per_s": None, "output_tokens_per_s": None,
        "peak_memory_bytes": None, "helm_run_dir": None, "notes": [],
    }


def _run_record(plan, suite: Suite, res: list[GenerationResult], stats, run_path: Path, sampler: Telemetry | None,
                out: Path, notes: list[str]) -> dict:
    group = suite.group_of(plan.entry)
    cols = suite.scenarios.get(group)
    if cols is not None:
        metrics = _metric_columns(stats, cols.metrics)
        metric, value = cols.metrics[0], metrics[cols.metrics[0]]
    else:
        metric, value = _main_metric(stats)
        metrics = {metric: value} if metric else {}
    starts = [r.timings.started for r in res if r.timings.started is not None]
    ends = [r.timings.finished for r in res if r.timings.finished is not None]
    t0, t1 = (min(starts), max(ends)) if starts and ends else (0.0, 0.0)
    # A request's share of its batch's time: batch latency / batch size. Sums to the busy time.
    busy = sum((r.timings.latency or 0.0) / max(r.batch_size, 1) for r in res)
    prompt = sum(r.prompt_tokens for r in res)
    output = sum(r.output_tokens for r in res)
    return {
        "name": plan.name,
        "entry": plan.entry,
        "scenario": group,
        "status": "finished",
        "main_metric": metric,
        "score": value,
        "metrics": metrics,
        "requests": len(plan.request_states),
        "errors": sum(1 for r in res if not r.ok),
        "first_error": next((r.error for r in res if not r.ok), None),
        "prompt_tokens": prompt,
        # prompt tokens run through the model (the rest came from a shared prefix's cache)
        "computed_prompt_tokens": sum(r.prompt_tokens - r.cached_tokens for r in res if r.computed_tokens > 0),
        "output_tokens": output,
        "wall_seconds": round(t1 - t0, 4),
        "busy_seconds": round(busy, 4),
        "tokens_per_s": round((prompt + output) / busy, 2) if busy > 0 else None,
        "output_tokens_per_s": round(output / busy, 2) if busy > 0 else None,
        "peak_memory_bytes": (sampler.peak(t0, t1) or None) if sampler is not None else None,
        **run_performance(res),
        "helm_run_dir": str(run_path.relative_to(out)),
        "notes": notes,
    }


def _totals(runs: list[dict], execute_seconds: float, sampler: Telemetry | None) -> dict:
    prompt = sum(r["prompt_tokens"] for r in runs)
    output = sum(r["output_tokens"] for r in runs)
    scores = [r["score"] for r in runs if r["score"] is not None]
    return {
        "runs": len(runs),
        "not_run": sum(1 for r in runs if r["status"] == "not_run"),
        "unfinished": sum(1 for r in runs if r["status"] in ("partial", "not_started", "failed")),
        "answered": sum(r.get("answered", 0) for r in runs),
        "unanswered": sum(r.get("unanswered", 0) for r in runs),
        "requests": sum(r["requests"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "prompt_tokens": prompt,
        "computed_prompt_tokens": sum(r.get("computed_prompt_tokens", 0) for r in runs),
        "output_tokens": output,
        "execute_seconds": round(execute_seconds, 3),
        "tokens_per_s": round((prompt + output) / execute_seconds, 2) if execute_seconds > 0 else None,
        "output_tokens_per_s": round(output / execute_seconds, 2) if execute_seconds > 0 else None,
        "mean_score": sum(scores) / len(scores) if scores else None,
        "peak_memory_bytes": sampler.peak(),
    }

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
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable

from effbench import __version__
from effbench.backends import make_backend
from effbench.contracts import EffbenchError, GenerationRequest, GenerationResult
from effbench.profiler import MemorySampler
from effbench.scheduler import Scheduler
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
    parallelism: int = 4


@dataclass
class Progress:
    """Callbacks for a live view; all optional."""

    on_phase: Callable[[str], None] = lambda phase: None
    on_plan: Callable[[dict[str, int]], None] = lambda requests_per_run: None
    on_batch: Callable[[list[GenerationRequest], list[GenerationResult]], None] = lambda reqs, res: None
    on_warning: Callable[[str], None] = lambda line: None


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


def environment(backend) -> dict:
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
        "device": getattr(backend, "device", None),
    }
    if env["device"] == "cuda":
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


def plan_suite(submission: Submission, suite: Suite, opts: RunOptions, session, progress: Progress) -> SuitePlan:
    """Everything HELM does before the first request, and every data check, with no model
    loaded: a missing file costs seconds, not a model load."""
    from effbench.helm_bridge import adapt_offline, helm_model_name, parse_entry, register_model, stage_perturbation_resources

    helm_dir = session.helm_dir
    staged: list[str] = []
    if opts.data_dir is not None:
        from effbench.data import stage

        staged = stage(opts.data_dir, helm_dir)
        stage_perturbation_resources(opts.data_dir, helm_dir)
    helm_name = helm_model_name(submission.name)
    register_model(helm_name, submission.tokenizer_dir, submission.manifest.limits.max_sequence_length)

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
    sampler = MemorySampler()
    with sampler:
        phase("plan")
        submission = submission.fetch_hub_base()
        session = HelmSession(opts.out / "helm", suite.name, parallelism=opts.parallelism)
        plan = plan_suite(submission, suite, opts, session, progress)
        requests = plan.requests(suite.name)
        progress.on_plan({p.name: len(p.request_states) for p in plan.plans})

        phase("load")
        backend = make_backend(submission, cache_dir=opts.cache_dir)
        backend.start()
        try:
            phase("execute")
            results = Scheduler(backend).execute(requests, on_batch=progress.on_batch)
            phases[-1].end = time.time()
        finally:
            backend.close()

        phase("score")
        runs = []
        for p in plan.plans:
            res = [results[f"{p.name}#{i}"] for i in range(len(p.request_states))]
            stats, run_path = session.score_run(p, [fill(st, r) for st, r in zip(p.request_states, res)])
            runs.append(_run_record(p, suite, res, stats, run_path, sampler, opts.out, plan.notes.get(p.name, [])))
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
        "backend": {
            "name": backend.name,
            "model_dir": str(backend.model_dir),
            "merged_this_run": bool(getattr(backend, "merged_now", False)),
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
        "memory_source": sampler.source,
        "environment": environment(backend),
        "data_dir": str(opts.data_dir) if opts.data_dir else None,
        "datasets_staged": plan.staged,
        "helm_output": str(opts.out / "helm"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    path = opts.out / "results.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=2))
    os.replace(tmp, path)
    return RunOutcome(out, path, phases)


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
        "requests": 0, "errors": 0, "first_error": None, "prompt_tokens": 0, "output_tokens": 0,
        "wall_seconds": 0.0, "busy_seconds": 0.0, "tokens_per_s": None, "output_tokens_per_s": None,
        "peak_memory_bytes": None, "helm_run_dir": None, "notes": [],
    }


def _run_record(plan, suite: Suite, res: list[GenerationResult], stats, run_path: Path, sampler: MemorySampler,
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
        "requests": len(res),
        "errors": sum(1 for r in res if not r.ok),
        "first_error": next((r.error for r in res if not r.ok), None),
        "prompt_tokens": prompt,
        "output_tokens": output,
        "wall_seconds": round(t1 - t0, 4),
        "busy_seconds": round(busy, 4),
        "tokens_per_s": round((prompt + output) / busy, 2) if busy > 0 else None,
        "output_tokens_per_s": round(output / busy, 2) if busy > 0 else None,
        "peak_memory_bytes": sampler.peak(t0, t1) or None,
        "helm_run_dir": str(run_path.relative_to(out)),
        "notes": notes,
    }


def _totals(runs: list[dict], execute_seconds: float, sampler: MemorySampler) -> dict:
    prompt = sum(r["prompt_tokens"] for r in runs)
    output = sum(r["output_tokens"] for r in runs)
    scores = [r["score"] for r in runs if r["score"] is not None]
    return {
        "runs": len(runs),
        "not_run": sum(1 for r in runs if r["status"] == "not_run"),
        "requests": sum(r["requests"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "prompt_tokens": prompt,
        "output_tokens": output,
        "execute_seconds": round(execute_seconds, 3),
        "tokens_per_s": round((prompt + output) / execute_seconds, 2) if execute_seconds > 0 else None,
        "output_tokens_per_s": round(output / execute_seconds, 2) if execute_seconds > 0 else None,
        "mean_score": sum(scores) / len(scores) if scores else None,
        "peak_memory_bytes": sampler.peak(),
    }

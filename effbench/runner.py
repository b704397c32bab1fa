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
    data_dir: Path | None = None  # local copies of public datasets (effbench.data)
    parallelism: int = 4


@dataclass
class Progress:
    """Callbacks for a live view; all optional."""

    on_phase: Callable[[str], None] = lambda phase: None
    on_plan: Callable[[dict[str, int]], None] = lambda requests_per_run: None
    on_batch: Callable[[list[GenerationRequest], list[GenerationResult]], None] = lambda reqs, res: None


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


def run_suite(submission: Submission, suite: Suite, opts: RunOptions, progress: Progress | None = None) -> RunOutcome:
    from effbench.helm_bridge import (
        HelmSession,
        ensure_nltk_punkt_tab,
        fill,
        helm_model_name,
        register_model,
        to_generation_request,
    )
    from effbench.merge import default_cache_dir

    progress = progress or Progress()
    phases: list[Phase] = []

    def phase(name: str) -> Phase:
        if phases and not phases[-1].end:
            phases[-1].end = time.time()
        progress.on_phase(name)
        p = Phase(name, time.time())
        phases.append(p)
        return p

    opts.out.mkdir(parents=True, exist_ok=True)
    ensure_nltk_punkt_tab(opts.cache_dir or default_cache_dir())
    if opts.data_dir is not None:
        from effbench.data import stage

        stage(opts.data_dir, opts.out / "helm")
    sampler = MemorySampler()
    with sampler:
        phase("load")
        backend = make_backend(submission, cache_dir=opts.cache_dir)
        backend.start()
        try:
            phase("plan")
            helm_name = helm_model_name(submission.name)
            session = HelmSession(opts.out / "helm", suite.name, parallelism=opts.parallelism)
            register_model(helm_name, backend.model_dir, submission.manifest.limits.max_sequence_length)
            specs = session.run_specs(suite.entries(), helm_name, opts.max_eval_instances or suite.max_eval_instances)
            if opts.run_filter:
                specs = [(e, s) for e, s in specs if fnmatch.fnmatch(s.name, opts.run_filter) or fnmatch.fnmatch(e, opts.run_filter)]
                if not specs:
                    raise EffbenchError(f"--runs: pattern {opts.run_filter!r} matches no run of suite {suite.name}")
            plans = [session.plan_run(entry, spec) for entry, spec in specs]
            requests: list[GenerationRequest] = []
            for plan in plans:
                requests += [to_generation_request(st, suite.name, plan.name, i) for i, st in enumerate(plan.request_states)]
            progress.on_plan({p.name: len(p.request_states) for p in plans})

            phase("execute")
            results = Scheduler(backend).execute(requests, on_batch=progress.on_batch)
        finally:
            exec_end = time.time()
            backend.close()

        phase("score")
        runs = []
        for plan in plans:
            res = [results[f"{plan.name}#{i}"] for i in range(len(plan.request_states))]
            stats, run_path = session.score_run(plan, [fill(st, r) for st, r in zip(plan.request_states, res)])
            runs.append(_run_record(plan, res, stats, run_path, sampler, opts.out))
        phases[-1].end = time.time()

    execute = next(p for p in phases if p.name == "execute")
    execute.end = exec_end
    out = {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "submission": {"name": submission.name, "folder": str(submission.folder), "manifest": submission.manifest.model_dump()},
        "backend": {
            "name": backend.name,
            "model_dir": str(backend.model_dir),
            "merged_this_run": bool(getattr(backend, "merged_now", False)),
        },
        "suite": {"name": suite.name, "budget_minutes": suite.budget_minutes, "weight": suite.weight,
                  "max_eval_instances": opts.max_eval_instances or suite.max_eval_instances},
        "runs": runs,
        "totals": _totals(runs, execute.seconds, sampler),
        "phases": {p.name: round(p.seconds, 3) for p in phases},
        "memory_source": sampler.source,
        "environment": environment(backend),
        "helm_output": str(opts.out / "helm"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    path = opts.out / "results.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=2))
    os.replace(tmp, path)
    return RunOutcome(out, path, phases)


def _run_record(plan, res: list[GenerationResult], stats, run_path: Path, sampler: MemorySampler, out: Path) -> dict:
    metric, value = _main_metric(stats)
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
        "main_metric": metric,
        "score": value,
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
    }


def _totals(runs: list[dict], execute_seconds: float, sampler: MemorySampler) -> dict:
    prompt = sum(r["prompt_tokens"] for r in runs)
    output = sum(r["output_tokens"] for r in runs)
    scores = [r["score"] for r in runs if r["score"] is not None]
    return {
        "runs": len(runs),
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

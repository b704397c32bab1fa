"""Score: HELM's metrics per run -> the run records of results.json, under the chosen semantics
for what was not answered (README, "The budget"), the totals over runs, and the suite's score
(suite_score: the one definition every command shows)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Mapping

from effbench.challenge.suites import Suite
from effbench.contracts import GenerationResult
from effbench.plan import RunOptions
from effbench.predict.profiler import Telemetry, run_performance


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


def main_metric(stats) -> tuple[str | None, float | None]:
    by_name = {}
    for s in stats:
        n = s.name
        if n.perturbation is None and n.sub_split is None and n.split in ("test", "valid") and s.count > 0:
            by_name.setdefault(n.name, s.mean)
    for m in MAIN_METRICS:
        if m in by_name:
            return m, by_name[m]
    return None, None


def score_runs(plan, suite: Suite, session, results: dict[str, GenerationResult], opts: RunOptions, sampler) -> list[dict]:
    """HELM's metrics per run, under the chosen semantics for what was not answered:
    - helm (the challenge's): a run with any request unanswered or failed is lost whole; HELM
      writes nothing for it and all its metrics count as zero;
    - item: an unanswered request gets an empty completion (flagged with an error) and HELM scores
      it (zero for the exact-match family); answered items keep their scores."""
    from effbench.challenge.helm_bridge import fill, unanswered_result

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
            runs.append(lost_record(p, suite, status if missing else "failed", why, counts, [r for r in got if r], notes))
            continue
        filled = [r if r is not None else unanswered_result(i) for i, r in zip(ids, got)]
        stats, run_path = session.score_run(p, [fill(st, r) for st, r in zip(p.request_states, filled)])
        rec = run_record(p, suite, [r for r in got if r is not None], stats, run_path, sampler, opts.out, notes)
        rec.update(status=status, **counts)
        runs.append(rec)
    return runs


def lost_record(p, suite: Suite, status: str, why: str, counts: dict, got: list[GenerationResult], notes: list[str]) -> dict:
    rec = not_run_record(p.name, p.entry, suite, f"lost whole under the challenge's rule: {why}")
    rec.update(status=status, requests=len(p.request_states), **counts,
               prompt_tokens=sum(r.prompt_tokens for r in got), output_tokens=sum(r.output_tokens for r in got), notes=notes)
    return rec


def columns_of(suite: Suite, group: str, runs: list[dict]):
    main = next((r["main_metric"] for r in runs if r["scenario"] == group and r["main_metric"]), None)
    return suite.columns(group, main)


def metric_columns(stats, columns: list[str]) -> dict[str, float | None]:
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


def not_run_record(name: str, entry: str, suite: Suite, reason: str) -> dict:
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


def not_run_records(plan, suite: Suite) -> list[dict]:
    """A not_run record (score 0) for each run the plan could not run: every place that scores a
    suite counts them, as the challenge does."""
    entry_of = {spec.name: entry for entry, spec in plan.specs} | {e: e for e, _ in suite.entries()}
    return [not_run_record(name, entry_of[name], suite, why) for name, why in plan.not_run.items()]


def run_record(plan, suite: Suite, res: list[GenerationResult], stats, run_path: Path, sampler: Telemetry | None,
                out: Path, notes: list[str]) -> dict:
    group = suite.group_of(plan.entry)
    cols = suite.scenarios.get(group)
    if cols is not None:
        metrics = metric_columns(stats, cols.metrics)
        metric, value = cols.metrics[0], metrics[cols.metrics[0]]
    else:
        metric, value = main_metric(stats)
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


def _score_or_zero(score: float | None) -> float:
    return 0.0 if score is None or math.isnan(score) else score


def scenario_scores(runs: Iterable[Mapping]) -> dict[str, float]:
    """Scenario -> the mean score of its runs (records with "scenario" and "score"); a run lost,
    not run or without a value counts 0, as a missing value does in effbench/challenge/rank.py."""
    by: dict[str, list[float]] = {}
    for r in runs:
        by.setdefault(r["scenario"], []).append(_score_or_zero(r["score"]))
    return {k: math.fsum(v) / len(v) for k, v in sorted(by.items())}


def suite_score(runs: Iterable[Mapping]) -> float | None:
    """The score of a suite, the one definition: the mean over scenarios of scenario_scores, so a
    scenario weighs the same however many runs it has (the challenge's grouping). None: no run.
    results.json's totals, `effbench check`, simulate and the reports all show this one."""
    scores = scenario_scores(runs)
    return math.fsum(scores.values()) / len(scores) if scores else None


def mean_run_score(runs: Iterable[Mapping]) -> float | None:
    """The plain mean over runs of their scores, runs without one left out (totals.mean_run_score)."""
    scores = [r["score"] for r in runs if r["score"] is not None]
    return math.fsum(scores) / len(scores) if scores else None


def totals(runs: list[dict], execute_seconds: float, sampler: Telemetry | None) -> dict:
    prompt = sum(r["prompt_tokens"] for r in runs)
    output = sum(r["output_tokens"] for r in runs)
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
        "suite_score": suite_score(runs),
        "mean_run_score": mean_run_score(runs),
        "peak_memory_bytes": sampler.peak() if sampler is not None else None,
    }

"""`effbench simulate OUT`: the score a finished run would have had under other budgets and orders.

It replays the journal's per-request timings. In the recorded order the timeline is the real one:
a request counts at budget B when its batch landed within B of the first request (a batch still
in flight at B is cancelled, as in a real run). In another order, each request costs its share of
its recorded batch (batch time / batch size) and the scheduler's own batching for that order is
laid end to end: an estimate, good where batch cost scales with its size. Scores come from HELM's
metrics on the same plan (rebuilt from run_config.json, no model loaded), with the unanswered
requests treated as the chosen semantics says.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from effbench.contracts import EffbenchError, GenerationResult
from effbench.execute.journal import JOURNAL_NAME, budget_timeline, read_journal
from effbench.execute.order import plan_batches


@dataclass
class BudgetPoint:
    budget_minutes: float
    answered: int
    requests: int
    runs_finished: int
    runs: int
    scenario_scores: dict[str, float]
    suite_score: float  # score.suite_score at this budget
    answered_per_run: dict[str, int]


def replay_finish_times(results: dict[str, GenerationResult], events: list[dict], requests, order: str | None,
                        recorded_order: str, max_batch_size: int) -> dict[str, float]:
    """Request id -> budget seconds at which it would be answered."""
    at, _ = budget_timeline(list(results.values()), events)
    if order in (None, recorded_order):
        return at
    by_batch: dict[int, list[GenerationResult]] = {}
    for r in results.values():
        if r.computed_tokens > 0 or r.error:  # fanned-out duplicates cost nothing
            by_batch.setdefault(r.batch_id, []).append(r)
    cost = {}
    for members in by_batch.values():
        latency = max((m.timings.latency or 0.0) for m in members)
        for m in members:
            cost[m.request_id] = latency / max(len(members), 1)
    answered = [q for q in requests if q.id in results]
    lengths = {q.id: results[q.id].prompt_tokens for q in answered}
    batches, dupes = plan_batches(answered, lengths, max_batch_size, order)
    clock, out = 0.0, {}
    for b in batches:
        clock += sum(cost.get(q.id, 0.0) for q in b)
        for q in b:
            out[q.id] = clock
            for d in dupes.get(q.id, ()):
                out[d] = clock
    return out


def simulate(out: Path, budgets_minutes: list[float], order: str | None = None, semantics: str | None = None) -> dict:
    from effbench.challenge.helm_bridge import HelmSession, ensure_nltk_punkt_tab
    from effbench.paths import default_cache_dir
    from effbench.plan import Progress, RunOptions, plan_suite
    from effbench.results import load_results, load_run_config, results_file
    from effbench.score import not_run_records, scenario_scores, score_runs, suite_score
    from effbench.submission import Submission
    from effbench.challenge.suites import load_suite

    config = load_run_config(out)
    opts = RunOptions.from_json(config["options"])
    # Scoring imports HELM's metric modules, which download punkt_tab on import: the same offline
    # stub as `effbench run` (this is also the path of `effbench report --html`).
    ensure_nltk_punkt_tab(opts.cache_dir or default_cache_dir())
    if not results_file(out).is_file():
        raise EffbenchError(f"{results_file(out)}: missing; simulate replays a finished run (resume it first)")
    recorded = load_results(out)
    _, journal_results, events = read_journal(out / JOURNAL_NAME)
    results = {r.request_id: r for r in journal_results}
    sub = Submission.load(config["submission"], allow_pickle=config["allow_pickle"], trust_remote_code=config["trust_remote_code"],
                          allow_outside_paths=config.get("allow_outside_paths", False))
    suite = load_suite(config["suite"])
    semantics = semantics or opts.semantics
    with tempfile.TemporaryDirectory(prefix="effbench-simulate-") as tmp:
        session = HelmSession(Path(tmp) / "helm", suite.name, parallelism=opts.parallelism)
        plan = plan_suite(sub.fetch_hub_base(), suite, replace(opts, out=Path(tmp)), session, Progress())
        requests = plan.requests(suite.name)
        finish = replay_finish_times(results, events, requests, order, opts.order, sub.manifest.limits.max_batch_size)
        points = []
        for minutes in budgets_minutes:
            got = {i: r for i, r in results.items() if finish.get(i, float("inf")) <= minutes * 60}
            runs = score_runs(plan, suite, session, got, replace(opts, out=Path(tmp), semantics=semantics), None)
            runs += not_run_records(plan, suite)
            per_run = {p.name: sum(1 for i in range(len(p.request_states)) if f"{p.name}#{i}" in got) for p in plan.plans}
            points.append(BudgetPoint(minutes, len(got), len(requests), sum(r["status"] == "finished" for r in runs),
                                      len(runs), scenario_scores(runs), suite_score(runs) or 0.0, per_run))
    return {
        "out": str(out),
        "order": order or opts.order,
        "recorded_order": opts.order,
        "semantics": semantics,
        "recorded_budget_minutes": recorded["budget"]["minutes"],
        "points": [p.__dict__ for p in points],
    }

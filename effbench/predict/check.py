"""`effbench check`: will this submission finish the suite in its budget on the target card?

Plan the whole suite (no model), run a stratified probe through the scheduler's real batching,
fit the cost model (effbench.predict.cost_model), translate it to the target card by the roofline
(effbench.predict.roofline: prefill by FLOP/s, decode by bandwidth), lay out the full suite and read the
verdict off the 90% interval: PASS when even its upper end is within the budget, AT RISK when
only the median is, FAIL otherwise. The probe's answers, scored by HELM, give each run's
expected score, and so the score a budget overrun would cost.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from effbench.backends.options import HFOptions, VLLMOptions
from effbench.contracts import EffbenchError
from effbench.predict.contention import CpuWatch
from effbench.predict.cost_model import (CALIBRATION_SUFFIX, FEATURES, answered_by, between_batches, calibration_requests, generated_tokens,
                                         project, stratified_probe)
from effbench.plan import Progress, RunOptions, plan_suite, prompt_shapes
from effbench.results import write_check
from effbench.runner import start_executor
from effbench.score import main_metric, metric_columns, not_run_records, suite_score
from effbench.execute.prefix import tokens_kept
from effbench.execute.executor import InProcess
from effbench.execute.journal import Journal, plan_digest
from effbench.execute.scheduler import Scheduler
from effbench.submission import Submission
from effbench.challenge.suites import Suite

PROBE_JOURNAL = "probe-journal.jsonl"  # in check's --out: the probe's results, one JSON line each

VERDICT_EXIT = {"PASS": 0, "AT RISK": 1, "FAIL": 2}


def _calibration_info(calibs, results: dict) -> list[dict]:
    """check.json's account of the calibration batches: rows, tokens decoded, seconds, or the error."""
    out = []
    for calib in calibs:
        res = results.get(calib.id)
        if res is None or not res.ok:
            out.append({"rows": calib.num_completions, "request": calib.id, "error": res.error if res is not None else "no result"})
            continue
        t = res.timings
        out.append({"rows": calib.num_completions, "request": calib.id, "decoded_tokens": generated_tokens(res),
                    "seconds": round(t.finished - t.started, 3)})
    return out


def _probe_scores(plan, probe_ids: set[str], results, session, suite: Suite) -> dict[str, float | None]:
    """Each run's main metric on its probed items, scored by HELM's metrics (an estimate of the
    run's score from a small sample; None where HELM gives no main metric)."""
    from effbench.challenge.helm_bridge import RunPlan, fill

    scores: dict[str, float | None] = {}
    for p in plan.plans:
        picked = [(i, st) for i, st in enumerate(p.request_states) if f"{p.name}#{i}" in probe_ids]
        picked = [(i, st) for i, st in picked if f"{p.name}#{i}" in results]
        if not picked:
            scores[p.name] = None
            continue
        sub = RunPlan(p.spec, p.scenario, [st for _, st in picked], p.entry)
        stats, _ = session.score_run(sub, [fill(st, results[f"{p.name}#{i}"]) for i, st in picked])
        cols = suite.scenarios.get(suite.group_of(p.entry))
        if cols is not None:

            scores[p.name] = metric_columns(stats, cols.metrics[:1])[cols.metrics[0]]
        else:
            scores[p.name] = main_metric(stats)[1]
    return scores


def _expected_suite_score(suite: Suite, plan, run_scores: dict[str, float]) -> float:
    """score.suite_score of the plan's runs with these scores (runs not run count 0)."""
    runs = [{"scenario": suite.group_of(p.entry), "score": run_scores.get(p.name, 0.0)} for p in plan.plans]
    return suite_score(runs + not_run_records(plan, suite)) or 0.0


def _prefix_cache(submission: Submission) -> tuple[str, int | None]:
    """How the backend keeps shared prefixes, from the manifest's typed options and their defaults
    (effbench/backends/options.py): ("bounded", prefix_cache_bytes, None for the default share of
    free memory) for the HF backend's cache (effbench/execute/prefix.py), which the memory fit
    counts and the projection replays; ("engine", None) for vLLM's prefix caching, inside the KV
    space the engine allocates anyway and bounded by it; ("none", None) with reuse off, or behind
    an HTTP server (nothing known)."""
    o = submission.manifest.backend_args
    if isinstance(o, HFOptions):  # hf, and fault (its subclass)
        return ("bounded", o.prefix_cache_bytes) if o.prefix_reuse else ("none", None)
    if isinstance(o, VLLMOptions) and o.enable_prefix_caching is not False:  # None: on, as vllm.py starts the engine
        return "engine", None
    return "none", None


def check(submission: Submission, suite: Suite, opts: RunOptions, *, track: str, probe_fraction: float,
          budget_minutes: float | None, hardware_cache: Path | None, progress: Progress | None = None) -> dict:
    from effbench.backends import make_backend
    from effbench.predict.hardware import get_profile, measure_here
    from effbench.challenge.helm_bridge import HelmSession, ensure_nltk_punkt_tab
    from effbench.predict.memfit import fit_submission
    from effbench.paths import default_cache_dir
    from effbench.predict.roofline import CostCoefficients, translate_coefficients
    from effbench.execute.worker import BackendWorker

    if not 0 < probe_fraction <= 0.5:
        raise EffbenchError(f"--probe: {probe_fraction} must be a fraction of the requests in (0, 0.5]")
    progress = progress or Progress()
    opts.out.mkdir(parents=True, exist_ok=True)
    ensure_nltk_punkt_tab(opts.cache_dir or default_cache_dir())
    t_start = time.time()
    submission = submission.fetch_hub_base()
    session = HelmSession(opts.out / "helm", suite.name, parallelism=opts.parallelism,
                          instance_cache=(opts.cache_dir or default_cache_dir()) / "helm-instances")
    progress.on_phase("plan")
    plan = plan_suite(submission, suite, opts, session, progress)
    requests = plan.requests(suite.name)
    if not requests:
        raise EffbenchError(f"suite {suite.name}: no request to check (every run is filtered out or not run)")
    requests, lengths, prefixes = prompt_shapes(submission, requests)
    probe = stratified_probe(requests, probe_fraction)
    progress.on_plan({"probe": len(probe)})

    progress.on_phase("load")
    executor = InProcess(make_backend(submission, cache_dir=opts.cache_dir)) if opts.in_process else BackendWorker(submission, opts.cache_dir)
    info = start_executor(executor)
    journal = None
    try:
        progress.on_phase("probe")
        t0 = time.time()
        # the probe's results stay on disk, in the journal's format (what the cost model was fitted on)
        journal = Journal(opts.out / PROBE_JOURNAL, {"plan_digest": plan_digest(probe), "submission": submission.name,
                                                     "suite": suite.name, "requests": len(probe), "probe_fraction": probe_fraction})
        width = submission.manifest.limits.max_batch_size
        calibs = calibration_requests(probe, lengths, width)
        with CpuWatch() as watch:  # others on the cores make the probe's pace a weaker guide
            report = Scheduler(executor, width).execute(
                probe, lengths, order=opts.order, on_batch=progress.on_batch, groups=prefixes, journal=journal)
            probe_s = time.time() - t0
            # batches at the full width (cost_model.calibration_requests says why), each timed apart
            calibrated = {}
            for calib in calibs:
                calibrated |= Scheduler(executor, width).execute(
                    [calib], {calib.id: lengths[calib.id.split(CALIBRATION_SUFFIX)[0]]}, journal=journal).results
    finally:
        executor.close()
        if journal is not None:
            journal.close()

    progress.on_phase("project")
    here = measure_here(quick=True, cache_dir=hardware_cache)
    target = here if track == "here" else get_profile(track, cache_dir=hardware_cache)
    dtype = submission.manifest.dtype
    transform = None
    if target.name != here.name:
        def transform(c):
            t = translate_coefficients(CostCoefficients(*c), here, target, dtype)
            return np.array([t.fixed, t.prefill, t.step, t.row])
    results = report.results
    kind, cache_bytes = _prefix_cache(submission)
    mem = fit_submission(submission, target, prefix_cache_bytes=cache_bytes if kind == "bounded" else 0,
                         prefix_tokens=tokens_kept(prefixes, lengths))
    # the projection's cache: the HF backend's bound on the target card, vLLM's as good as unbounded
    replay = {"bounded": mem.prefix_bound_bytes, "engine": sys.maxsize, "none": None}[kind]
    proj = project(requests, lengths, list(results.values()), submission.manifest.limits.max_batch_size,
                   order=opts.order, coef_transform=transform, groups=prefixes,
                   prefix_cache_bytes=replay, kv_bytes_per_token=mem.kv_bytes_per_token,
                   gap=between_batches(results.values()), calibration=list(calibrated.values()))
    q05, q50, q95 = proj.quantiles()
    contention = watch.result
    if contention is not None and contention.contended:
        q05, q95 = q05 / contention.widen, q95 * contention.widen
    budget_min = suite.budget_minutes if budget_minutes is None else budget_minutes
    budget_s = budget_min * 60
    verdict = "PASS" if q95 <= budget_s else ("AT RISK" if q50 <= budget_s else "FAIL")

    scores = _probe_scores(plan, {q.id for q in probe}, results, session, suite)
    known = {k: (v or 0.0) for k, v in scores.items()}
    sizes = {p.name: len(p.request_states) for p in plan.plans}
    done = answered_by(proj, budget_s)
    if opts.semantics == "helm":
        kept = {k: (v if done.get(k, 0) >= sizes[k] else 0.0) for k, v in known.items()}
    else:
        kept = {k: v * min(done.get(k, 0), sizes[k]) / sizes[k] for k, v in known.items()}
    full, within = _expected_suite_score(suite, plan, known), _expected_suite_score(suite, plan, kept)

    runs = []
    for p in plan.plans:
        fin = proj.run_finish_s.get(p.name)
        med = float(np.median(fin)) if fin is not None else None
        runs.append({
            "name": p.name, "scenario": suite.group_of(p.entry), "requests": sizes[p.name], "probed": sum(1 for q in probe if q.origin.run == p.name),
            "projected_finish_min": round(med / 60, 3) if med is not None else None,
            "answered_within_budget": min(done.get(p.name, 0), sizes[p.name]),
            "past_budget": med is not None and med > budget_s,
            "probe_score": scores[p.name],
        })
    report = {
        "verdict": verdict,
        "exit_code": VERDICT_EXIT[verdict],
        "suite": suite.name,
        "track": target.name,
        "hardware": {"here": here.model_dump(), "target": target.model_dump(), "translated": transform is not None},
        "budget_minutes": budget_min,
        "order": opts.order,
        "semantics": opts.semantics,
        "projected_minutes": {"median": q50 / 60, "p05": q05 / 60, "p95": q95 / 60},
        "requests": len(requests),
        "probe": {"requests": len(probe), "fraction": len(probe) / len(requests), "batches": report.batches,
                  "seconds": round(probe_s, 3), "errors": sum(1 for r in results.values() if not r.ok),
                  "tokens_per_s": round(sum(r.prompt_tokens + r.output_tokens for r in results.values()) / probe_s, 1)
                  if probe_s > 0 else None,
                  "calibration": _calibration_info(calibs, calibrated)},
        "contention": contention.to_json() if contention is not None else None,
        "check_seconds": round(time.time() - t_start, 3),
        "load": info,
        "cost_model": dict(zip(FEATURES, map(float, proj.coef))),
        "runs": runs,
        "runs_past_budget": sum(1 for r in runs if r["past_budget"]),
        "items_past_budget": sum(r["requests"] - r["answered_within_budget"] for r in runs),
        "expected_score": {"if_all_finish": full, "within_budget": within, "lost": full - within},
        "memory": {"fits": mem.fits, "summary": mem.summary(), "total_bytes": mem.total_bytes,
                   "parts_bytes": {"weights": mem.weights_bytes, "KV cache": mem.kv_cache_bytes,
                                   "prefix cache": mem.prefix_cache_bytes, "activations": mem.activation_bytes,
                                   "runtime": mem.runtime_bytes},
                   "available_bytes": mem.available_bytes, "max_batch_that_fits": mem.max_batch_that_fits,
                   "prefix_cache_bytes": mem.prefix_cache_bytes, "prefix_bound_bytes": mem.prefix_bound_bytes},
        "not_run": plan.not_run,
    }
    # kept next to the probe's files: `effbench report RUN_OUT --prediction` draws it against a real run
    write_check(opts.out, report)
    return report

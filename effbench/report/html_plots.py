"""The plotted sections of the HTML report (effbench/report/html.py): tokens/s and memory over
time (journal.jsonl, results.json `timeline`), time per run, score against budget
(effbench.report.simulate replays the journal), and predicted against actual (an `effbench check`
output). Each returns its <section> as HTML; a section without data says so in a note."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from effbench.contracts import EffbenchError, GenerationResult
from effbench.execute.journal import JOURNAL_NAME, budget_timeline
from effbench.report.html_parts import MIB, escape, figure, label, legend, new_figure, short_name

BUDGET_FRACTIONS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5)  # of the recorded execute time: the default score curve


def _time_scale(span_s: float) -> tuple[float, str]:
    """Seconds for short runs, minutes past ten minutes: the axis stays readable either way."""
    return (60.0, "min") if span_s > 600 else (1.0, "s")


def over_time_section(results: dict, journal) -> str:
    """Tokens/s and memory on one clock (seconds since the run's first phase), so a throughput
    dip can be read against memory growing or the worker restarting."""
    timeline = results.get("timeline")
    parts = ['<section id="over-time"><h2>Throughput and memory over time</h2>']
    finished = [r for r in journal[0] if r.timings.finished is not None] if journal else []
    execs = sorted(e["started"] for e in journal[1] if e["kind"] == "execute") if journal else []
    if timeline:
        t0 = timeline["t0"]
    elif finished:
        t0 = min(r.timings.started if r.timings.started is not None else r.timings.finished for r in finished)
    else:
        t0 = 0.0
    span = max([r.timings.finished - t0 for r in finished] + [s[0] for s in (timeline or {}).get("samples", [])] + [1.0])
    scale, unit = _time_scale(span)
    clock = f"time since the run started ({unit})" if timeline else f"time since the first request ({unit})"
    spans = _execute_spans(execs, finished, t0)
    if finished:
        parts.append(_throughput_plot(finished, t0, spans, scale, clock, results["budget"]["elapsed_s"]))
    else:
        parts.append('<p class="note" id="note-throughput">No result in the journal'
                     f'{"" if journal else f" ({escape(JOURNAL_NAME)} is missing)"}: no throughput to draw.</p>')
    if timeline and timeline["samples"]:
        parts.append(_memory_plot(timeline, results["totals"]["peak_memory_bytes"], spans, scale, clock))
    else:
        parts.append('<p class="note" id="note-memory">No telemetry timeline in results.json (written by an effbench '
                     "older than the timeline, or sampled nothing): no memory plot. Peak memory: "
                     f'{results["totals"]["peak_memory_bytes"] / MIB:.0f} MiB ({escape(results["memory_source"])}).</p>')
    return "".join(parts) + "</section>"


def _execute_spans(starts: list[float], finished: list[GenerationResult], t0: float) -> list[tuple[float, float]]:
    """(start, end) of each execution (a resumed run has several), relative to t0."""
    spans = []
    for i, s in enumerate(starts):
        nxt = starts[i + 1] if i + 1 < len(starts) else float("inf")
        ends = [r.timings.finished for r in finished if s <= r.timings.finished < nxt]
        spans.append((s - t0, (max(ends) if ends else s) - t0))
    return spans


def _shade(ax, spans, scale: float) -> None:
    for i, (a, b) in enumerate(spans):
        ax.axvspan(a / scale, b / scale, color="#2ca02c", alpha=0.08, label="execute" if i == 0 else None)


def _throughput_plot(finished: list[GenerationResult], t0: float, spans, scale: float, clock: str, elapsed_s: float) -> str:
    """Tokens landed per bucket / bucket width, bucketed on finish time. About two batches per
    bucket, so that a bucket between two batch landings is rarely empty (which would read as a stall)."""
    t = np.array([r.timings.finished - t0 for r in finished])
    total = np.array([r.prompt_tokens + r.output_tokens for r in finished], dtype=float)
    output = np.array([r.output_tokens for r in finished], dtype=float)
    batches = len({r.batch_id for r in finished})
    start = min(a for a, _ in spans) if spans else float(t.min())
    lo, hi = min(start, float(t.min())), float(t.max())
    n = int(min(60, max(5, batches // 2)))
    edges = np.linspace(lo, hi if hi > lo else lo + 1e-3, n + 1)
    width = edges[1] - edges[0]
    tot_per_s = np.histogram(t, edges, weights=total)[0] / width
    out_per_s = np.histogram(t, edges, weights=output)[0] / width
    fig, ax = new_figure()
    _shade(ax, spans, scale)
    ax.stairs(tot_per_s, edges / scale, label="prompt + output tokens/s", color="#1f77b4", linewidth=1.8)
    ax.stairs(out_per_s, edges / scale, label="output tokens/s", color="#ff7f0e", linewidth=1.8)
    ax.set_xlabel(clock)
    ax.set_ylabel("tokens/s")
    ax.set_ylim(bottom=0)
    legend(fig, ax)
    ax.grid(alpha=0.3)
    mean = total.sum() / elapsed_s if elapsed_s > 0 else float("nan")
    caption = (f"Tokens of the results that landed in each {width:.3g} s bucket, divided by its width "
               f"({len(finished)} results from {batches} batches; mean over the execute phase {mean:,.0f} tokens/s). "
               "Shaded: execution.")
    return figure(fig, "plot-throughput", escape(caption))


def _memory_plot(timeline: dict, peak_bytes: int, spans, scale: float, clock: str) -> str:
    """GPU memory from NVML on a GPU, else the process tree's RSS: the figure the peak comes from."""
    cols = timeline["columns"]
    rows = timeline["samples"]
    t = [row[0] / scale for row in rows]
    gpu = timeline["source"] == "nvml" and any(row[cols.index("gpu_bytes")] is not None for row in rows)
    fig, ax = new_figure()
    _shade(ax, spans, scale)
    if gpu:
        g = cols.index("gpu_bytes")
        ax.plot(t, [(row[g] or 0) / MIB for row in rows], color="#1f77b4", linewidth=1.8, label="GPU memory (NVML)")
    r = cols.index("rss_bytes")
    ax.plot(t, [row[r] / MIB for row in rows], color="#9467bd" if gpu else "#1f77b4",
            linewidth=1.2 if gpu else 1.8, linestyle="--" if gpu else "-", label="host RSS")
    ax.axhline(peak_bytes / MIB, color="#d62728", linestyle=":", linewidth=1.2, label=f"peak {peak_bytes / MIB:,.0f} MiB")
    ax.set_xlabel(clock)
    ax.set_ylabel("MiB")
    ax.set_ylim(bottom=0)
    legend(fig, ax)
    ax.grid(alpha=0.3)
    caption = (f"{'GPU memory in use (NVML) and host RSS' if gpu else 'Resident memory (RSS) of effbench and its worker'}"
               f" over the whole run, {len(rows)} samples (source {timeline['source']}). Shaded: execution.")
    return figure(fig, "plot-memory", escape(caption))


def time_per_run_section(results: dict) -> str:
    """Where the execute time went: busy (backend time on the run's batches, shared batches
    split) against wall (first request to last result, overlapping other runs)."""
    runs = results["runs"]
    head = '<section id="time-per-run"><h2>Time per run</h2>'
    if not runs:
        return head + '<p class="note">No run in results.json.</p></section>'
    sub = results["submission"]["name"]
    names = [label(short_name(r["name"], sub)) for r in runs]
    busy = np.array([r.get("busy_seconds") or 0.0 for r in runs])
    wall = np.array([r.get("wall_seconds") or 0.0 for r in runs])
    y = np.arange(len(runs))
    fig = Figure(figsize=(9.5, 1.2 + 0.45 * len(runs)), layout="constrained")
    ax = fig.add_subplot()
    ax.barh(y - 0.2, wall, height=0.4, color="#aec7e8", label="wall s")
    ax.barh(y + 0.2, busy, height=0.4, color="#1f77b4", label="busy s")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    legend(fig, ax)
    ax.grid(axis="x", alpha=0.3)
    caption = ("Per run: wall seconds (its first request to its last result; runs advance together, so walls overlap) "
               f"and busy seconds (its share of the batches it was in). Sum of busy: {busy.sum():.1f} s "
               f"of {results['totals']['execute_seconds']:.1f} s executing.")
    return head + figure(fig, "plot-time-per-run", escape(caption)) + "</section>"


def _default_budgets(results: dict) -> list[float]:
    """Fractions of the recorded execute time, and the run's own budget: the curve's interesting
    part (where runs drop out) and where the run actually stood."""
    elapsed_min = results["budget"]["elapsed_s"] / 60
    points = {round(f * elapsed_min, 6) for f in BUDGET_FRACTIONS if f * elapsed_min > 0}
    if results["budget"]["minutes"]:
        points.add(float(results["budget"]["minutes"]))
    return sorted(points)


def score_against_budget_section(folder: Path, results: dict, budgets: list[float] | None) -> str:
    """Replays the journal at other budgets (effbench.report.simulate): how much score a shorter or
    longer budget would have cost or bought. A replay that cannot run is one line here, not a
    failed report."""
    from effbench.report.simulate import simulate

    head = '<section id="score-budget"><h2>Score against budget</h2>'
    budgets = sorted(budgets) if budgets else _default_budgets(results)
    if not budgets:
        return head + '<p class="note">Nothing was executed and the run had no budget: no budget to replay.</p></section>'
    try:
        sim = simulate(folder, budgets)
    except EffbenchError as e:
        return head + f'<p class="error" id="error-score-budget">Could not replay the run: {escape(e)}</p></section>'
    pts = sim["points"]
    x = [p["budget_minutes"] for p in pts]
    fig, ax = new_figure()
    ax.plot(x, [p["suite_score"] for p in pts], marker="o", color="#1f77b4", linewidth=1.8, label="suite score")
    ax.set_xlabel("budget (min)")
    ax.set_ylabel("suite score (mean over scenarios)")
    ax.set_ylim(bottom=0, top=max(1e-3, max(p["suite_score"] for p in pts)) * 1.1)
    share = ax.twinx()
    share.plot(x, [p["answered"] / p["requests"] if p["requests"] else 0.0 for p in pts], marker="s",
               color="#ff7f0e", linestyle="--", linewidth=1.4, label="share of requests answered")
    share.set_ylim(0, 1.05)
    share.set_ylabel("share answered")
    own = results["budget"]["minutes"]
    if own:
        ax.axvline(own, color="#d62728", linestyle=":", linewidth=1.5, label=f"this run's budget ({own:g} min)")
    if max(x) / min(x) > 20:
        ax.set_xscale("log")
    lines = ax.get_legend_handles_labels()
    more = share.get_legend_handles_labels()
    fig.legend(lines[0] + more[0], lines[1] + more[1], loc="outside upper center", ncols=4, frameon=False)
    ax.grid(alpha=0.3)
    caption = (f"The recorded run replayed at {len(pts)} budgets ({sim['order']} order, {sim['semantics']} semantics): "
               "a request counts when its batch landed within the budget; the unanswered score as the semantics says.")
    rows = "".join(f"<tr><td>{p['budget_minutes']:.4g}</td><td>{p['answered']}/{p['requests']}</td>"
                   f"<td>{p['runs_finished']}/{p['runs']}</td><td>{p['suite_score']:.4f}</td></tr>" for p in pts)
    table = ('<div class="scroll"><table><thead><tr><th>budget (min)</th><th>answered</th><th>runs finished</th><th>suite score</th></tr></thead>'
             f"<tbody>{rows}</tbody></table></div>")
    return head + figure(fig, "plot-score-budget", escape(caption)) + table + "</section>"


def _actual_finish_minutes(results: dict, journal) -> tuple[float, dict[str, float]]:
    """Execute minutes used, and each run's last result in minutes of budget clock (resumes
    counted without the gap), on the same clock `effbench check` projects."""
    per_run: dict[str, float] = {}
    if journal:
        at, _ = budget_timeline(journal[0], journal[1])
        for rid, s in at.items():
            run = rid.rsplit("#", 1)[0]
            per_run[run] = max(per_run.get(run, 0.0), s / 60)
    return results["budget"]["elapsed_s"] / 60, per_run


def predicted_against_actual_section(results: dict, journal, check: dict) -> str:
    """How good was the check's projection for this run? Only comparable when the check projected
    this machine; a projection for another card is shown, with that said plainly."""
    head = '<section id="predicted"><h2>Predicted against actual</h2>'
    pm = check["projected_minutes"]
    actual_total, actual_runs = _actual_finish_minutes(results, journal)
    translated = check.get("hardware", {}).get("translated", check["track"] not in ("here", "local"))
    notes = []
    if translated:
        notes.append(f"This check projected the suite on {check['track']}, not on the machine that ran it: "
                     "the projection is not comparable to this run's times.")
    else:
        notes.append(f"The check projected this machine (track {check['track']}).")
    if check.get("suite") not in (None, results["suite"]["name"]):
        notes.append(f"The check was for suite {check['suite']}, this run is {results['suite']['name']}.")
    if results["budget"]["deadline_hit"]:
        notes.append("This run hit its deadline: its actual times are cut short by the budget.")
    sub = results["submission"]["name"]
    predicted = {r["name"]: r.get("projected_finish_min") for r in check["runs"]}
    names = [r["name"] for r in results["runs"]] + [n for n in predicted if n not in {r["name"] for r in results["runs"]}]

    fig = Figure(figsize=(9.5, 1.4 + 0.45 * (len(names) + 1)), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(names) + 1)
    ax.errorbar([pm["median"]], [0], xerr=[[pm["median"] - pm["p05"]], [pm["p95"] - pm["median"]]], fmt="o",
                color="#1f77b4", capsize=5, markersize=7, label="predicted (median, 90% interval for the total)")
    pr = [(i + 1, predicted[n]) for i, n in enumerate(names) if predicted.get(n) is not None]
    if pr:
        ax.plot([v for _, v in pr], [i for i, _ in pr], "o", color="#1f77b4", markersize=7)
    act = [(0, actual_total)] + [(i + 1, actual_runs[n]) for i, n in enumerate(names) if n in actual_runs]
    ax.plot([v for _, v in act], [i for i, _ in act], "D", color="#ff7f0e", markersize=7, label="actual")
    ax.set_yticks(y, ["all runs (execute)"] + [label(short_name(n, sub)) for n in names])
    ax.invert_yaxis()
    ax.set_xlabel("minutes since execution started")
    ax.set_xlim(0, max([pm["p95"], actual_total, *[v for _, v in pr], *[v for _, v in act]]) * 1.08 or 1.0)
    legend(fig, ax)
    ax.grid(axis="x", alpha=0.3)
    caption = (f"Predicted by `effbench check` on track {check['track']} (budget {check['budget_minutes']:g} min) "
               "against this run: the total execute time, and per run the finish of its last request.")
    rows = [("all runs (execute)", f"{pm['median']:.3f} ({pm['p05']:.3f}-{pm['p95']:.3f})", f"{actual_total:.3f}")]
    rows += [(short_name(n, sub), "-" if predicted.get(n) is None else f"{predicted[n]:.3f}",
              f"{actual_runs[n]:.3f}" if n in actual_runs else "-") for n in names]
    body = "".join(f'<tr><td>{escape(a)}</td><td>{escape(b)}</td><td>{escape(c)}</td></tr>' for a, b, c in rows)
    table = f'<div class="scroll"><table><thead><tr><th>run</th><th>predicted (min)</th><th>actual (min)</th></tr></thead><tbody>{body}</tbody></table></div>'
    return (head + "".join(f'<p class="note">{escape(n)}</p>' for n in notes)
            + figure(fig, "plot-predicted", escape(caption)) + table + "</section>")

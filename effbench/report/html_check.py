"""`effbench check --html`: the projection drawn, for people who would rather look than read. One
self-contained page like the run report (html.py: inline SVG, no fetch): the verdict, the
projected finish of each scenario group against the budget with the whole suite's 90% interval,
and the memory fit on the target card."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from effbench.atomic import write_text_atomic
from effbench.report.html import CSP, SCRIPT, STYLE
from effbench.report.html_parts import MIB, escape, figure, label, legend, new_figure
from effbench.results import load_check

GIB = 1024 * MIB


def _groups(check: dict) -> dict[str, float | None]:
    """Scenario group -> minutes when its last run is projected to finish."""
    out: dict[str, float | None] = {}
    for r in check["runs"]:
        g = r.get("scenario") or r["name"].split(":")[0]
        f = r["projected_finish_min"]
        out[g] = f if out.get(g) is None else (max(out[g], f) if f is not None else out[g])
    return out


def _projection_plot(check: dict) -> str:
    groups = _groups(check)
    names = list(groups) + ["whole suite"]
    pm, budget = check["projected_minutes"], check["budget_minutes"]
    finish = np.array([groups[g] or 0.0 for g in groups] + [pm["median"]])
    fig, ax = new_figure(1.4 + 0.45 * len(names))
    y = np.arange(len(names))
    ax.barh(y, finish, height=0.6, color="#1f77b4", label="projected finish (median)")
    ax.errorbar([pm["median"]], [y[-1]], xerr=[[pm["median"] - pm["p05"]], [pm["p95"] - pm["median"]]], fmt="none",
                ecolor="#d62728", capsize=6, lw=2, label="90% interval")
    ax.axvline(budget, color="#ff7f0e", lw=2, label=f"budget {budget:g} min")
    ax.set_yticks(y, [label(n) for n in names])
    ax.invert_yaxis()
    ax.set_xlabel("minutes from the first request")
    ax.set_xlim(0, max(budget, pm["p95"], float(finish.max())) * 1.08)
    ax.grid(axis="x", alpha=0.3)
    legend(fig, ax)
    caption = (f"Projected finish per scenario group (its last run), and the whole suite's median with its 90% interval"
               f" ({pm['p05']:.1f}-{pm['p95']:.1f} min), against the budget of {budget:g} min on {check['track']}.")
    return figure(fig, "plot-projection", escape(caption))


def _memory_plot(check: dict) -> str:
    mem = check["memory"]
    parts = mem.get("parts_bytes") or {"total": mem["total_bytes"]}
    fig, ax = new_figure(1.9)
    left = 0.0
    colours = ["#1f77b4", "#aec7e8", "#2ca02c", "#9467bd", "#8c564b"]
    for (name, b), c in zip(parts.items(), colours):
        ax.barh([0], [b / GIB], left=left, height=0.5, color=c, label=label(name))
        left += b / GIB
    ax.axvline(mem["available_bytes"] / GIB, color="#ff7f0e", lw=2, label="available on the card")
    ax.set_yticks([0], [label(check["track"])])
    ax.set_xlabel("GiB")
    ax.set_xlim(0, max(left, mem["available_bytes"] / GIB) * 1.08)
    legend(fig, ax)
    return figure(fig, "plot-memory-fit", escape(f"Memory on {check['track']}: {mem['summary']}"))


def write_check_html(check_path: Path, dest: Path | None = None) -> Path:
    """CHECK (an `effbench check` folder or its check.json) drawn to DEST (default: check.html
    next to check.json)."""
    check = load_check(check_path)
    folder = check_path if check_path.is_dir() else check_path.parent
    pm, es = check["projected_minutes"], check["expected_score"]
    left = check.get("not_run") or {}
    verdict = (f"{check['verdict']}" + (f" on {len(check['runs'])} of {len(check['runs']) + len(left)} runs" if left else "")
               + f": projected {pm['median']:.1f} min (90% {pm['p05']:.1f}-{pm['p95']:.1f}) of {check['budget_minutes']:g} min"
               f" on {check['track']}; expected score {es['if_all_finish']:.4f}, {es['within_budget']:.4f} within the budget")
    notes = "".join(f"<li>{escape(n)}: {escape(why)}</li>" for n, why in left.items())
    body = (f"<h1>{escape(check['suite'])}: will it finish?</h1><p><strong>{escape(verdict)}</strong></p>"
            + (f"<p>Not run:</p><ul>{notes}</ul>" if notes else "")
            + '<section id="projection"><h2>Projected finish against the budget</h2>' + _projection_plot(check) + "</section>"
            + '<section id="memory"><h2>Memory fit</h2>' + _memory_plot(check) + "</section>")
    title = f"effbench check: {check['suite']} on {check['track']}"
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n<body><main>\n{body}\n</main>"
            f"<script>{SCRIPT}</script></body></html>\n")
    dest = dest or folder / "check.html"
    write_text_atomic(dest, page)
    return dest

"""`effbench report OUT --html`: one self-contained HTML file that explains a finished run.

It has to open on an offline machine and survive being mailed around, so everything is inline:
plots are inline SVG (html_parts.py); styles sit in one <style>; a
Content-Security-Policy meta tag forbids the page any fetch. The one inline <script> only records
where each plot was drawn on its <figure> (data-rendered="WxH", data-box, data-paths), which the
tests read back from a headless browser.

Sections: header and summary table (results.json), here; the plotted ones (tokens/s and memory
over time, time per run, score against budget, and, given an `effbench check` output, predicted
against actual) in html_plots.py; how a plot becomes inline SVG in html_parts.py.
"""

from __future__ import annotations

from pathlib import Path

from effbench.atomic import write_text_atomic
from effbench.contracts import EffbenchError, GenerationResult
from effbench.execute.journal import JOURNAL_NAME, read_journal
from effbench.report.html_parts import MIB, escape, short_name
from effbench.report.html_plots import (over_time_section, predicted_against_actual_section,
                                        score_against_budget_section, time_per_run_section)
from effbench.results import load_check, load_results

CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1b1b1b; background: #fafafa; }
main { max-width: 1200px; margin: 0 auto; padding: 1.5em; }
h1 { font-size: 1.5em; margin: 0 0 .4em; } h2 { font-size: 1.2em; margin: 1.6em 0 .5em; border-bottom: 1px solid #ddd; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: .15em 1em; margin: 0; }
dl.meta dt { color: #555; } dl.meta dd { margin: 0; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; margin: .5em 0; }
th, td { padding: .25em .6em; border-bottom: 1px solid #e4e4e4; text-align: right; white-space: nowrap; }
div.scroll { overflow-x: auto; }
th:first-child, td:first-child, td.text { text-align: left; } td:first-child { white-space: normal; overflow-wrap: anywhere; } tr.total td { font-weight: 600; border-top: 2px solid #999; }
figure { margin: 1em 0; background: #fff; border: 1px solid #e4e4e4; padding: .5em; }
figure svg { width: 100%; height: auto; display: block; } figcaption { color: #444; font-size: .92em; margin-top: .3em; }
p.note { color: #555; font-style: italic; } p.error { color: #a00000; }
"""

# Records where each plot was drawn (size, page box, drawn paths); tests read it back from a headless browser.
SCRIPT = """
for (const f of document.querySelectorAll("figure[id^='plot-']")) {
  const svg = f.querySelector("svg");
  const r = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
  f.dataset.rendered = Math.round(r.width) + "x" + Math.round(r.height);
  f.dataset.box = [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height].map(Math.round).join(",");
  f.dataset.paths = svg ? svg.querySelectorAll("path").length : 0;
}
"""


def write_html_report(out: Path, dest: Path | None = None, *, prediction: Path | None = None,
                      budgets: list[float] | None = None) -> Path:
    """Write the report of the run in OUT (folder or its results.json) to DEST (default
    OUT/report.html). prediction: an `effbench check` folder or its check.json; budgets: minutes
    for the score curve (default: fractions of the recorded execute time, and the run's budget)."""
    results = load_results(out)
    if budgets is not None and any(b <= 0 for b in budgets):
        raise EffbenchError(f"budgets {budgets}: give positive minutes")
    folder = out if out.is_dir() else out.parent
    check = load_check(prediction) if prediction is not None else None
    journal = _load_journal(folder)
    sections = [
        _header(results),
        _summary_table(results),
        over_time_section(results, journal),
        time_per_run_section(results),
        score_against_budget_section(folder, results, budgets),
    ]
    if check is not None:
        sections.append(predicted_against_actual_section(results, journal, check))
    title = f"effbench: {results['submission']['name']} on {results['suite']['name']}"
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n<body><main>\n"
            + "\n".join(sections) + f"\n</main><script>{SCRIPT}</script></body></html>\n")
    dest = dest or folder / "report.html"
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(dest, page)  # a browser or CI job reading it meanwhile sees the old report or the new
    return dest


def _load_journal(folder: Path) -> tuple[list[GenerationResult], list[dict]] | None:
    """(results, events), or None for a folder without a journal (the sections then say so)."""
    path = folder / JOURNAL_NAME
    if not path.is_file():
        return None
    _, results, events = read_journal(path)
    return results, events


# --- sections -----------------------------------------------------------------------------------


def _header(results: dict) -> str:
    """Who ran what, where, under which budget: the conditions the numbers below hold for."""
    b, be, env = results["budget"], results["backend"], results["environment"]
    budget = "none" if b["minutes"] is None else f"{b['minutes']:g} min"
    budget += f", {b['order']} order, {b['semantics']} semantics, used {b['elapsed_s']:.1f} s"
    budget += ", deadline hit" if b["deadline_hit"] else ""
    rows = [
        ("submission", f"{results['submission']['name']} ({results['submission']['folder']})"),
        ("suite", f"{results['suite']['name']} (budget {results['suite']['budget_minutes']:g} min, weight {results['suite']['weight']:g})"),
        ("backend", f"{be['name']} on {be['device']} ({be['process']}), loaded in {be['load_seconds']:.1f} s"),
        ("suite score", _score(results["totals"]["suite_score"]) + " (per scenario the mean over its runs, then the mean"
                        " over scenarios; a run lost or not run counts 0)"),
        ("track", results["track"]),
        ("budget", budget),
        ("phases", ", ".join(f"{k} {v:.1f} s" for k, v in results["phases"].items())),
        ("memory source", results["memory_source"]),
        ("effbench", env.get("effbench", "?")),
        ("created", results["created"]),
    ]
    dl = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in rows)
    return (f"<header><h1>{escape(results['submission']['name'])} on {escape(results['suite']['name'])}</h1>"
            f'<dl class="meta">{dl}</dl></header>')


def _score(score: float | None) -> str:
    return "-" if score is None else f"{score:.3f}"


def _summary_table(results: dict) -> str:
    """The same table as the terminal's summary (effbench.report.live.print_summary)."""
    cols = ("run", "status", "metric", "score", "requests", "errors", "prompt tok", "output tok", "tok/s", "busy s", "peak MiB")
    head = "".join(f"<th>{c}</th>" for c in cols)
    sub = results["submission"]["name"]
    body = []
    for r in results["runs"]:
        cells = [short_name(r["name"], sub), r["status"], r["main_metric"] or "-",
                 "-" if r["score"] is None else f"{r['score']:.3f}", r["requests"], r["errors"], r["prompt_tokens"],
                 r["output_tokens"], f"{r.get('tokens_per_s') or 0:.0f}", f"{r.get('busy_seconds') or 0:.1f}",
                 f"{(r['peak_memory_bytes'] or 0) / MIB:.0f}"]
        title = f' title="{escape(r["reason"])}"' if r.get("reason") else ""
        body.append(f"<tr{title}>" + "".join(
            (f'<td class="text">{escape(c)}</td>' if i in (1, 2) else f"<td>{escape(c)}</td>") for i, c in enumerate(cells)) + "</tr>")
    t = results["totals"]
    total = ["total", f"{t.get('not_run', 0)} not run", "suite score", _score(t["suite_score"]),
             t["requests"], t["errors"], t["prompt_tokens"], t["output_tokens"], f"{t.get('tokens_per_s') or 0:.0f}",
             f"{t['execute_seconds']:.1f}", f"{t['peak_memory_bytes'] / MIB:.0f}"]
    body.append('<tr class="total">' + "".join(f"<td>{escape(c)}</td>" for c in total) + "</tr>")
    return (f'<section id="summary"><h2>Summary</h2><div class="scroll"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>"
            f'<p class="note">busy s: time the backend spent on a run\'s batches; the total row has the execute phase\'s wall time.</p></section>')

"""What `run`, `report` and `check` print at the end: per scenario group by default, per run with
--verbose (results.json and check.json keep every run's full name), run names shortened in
tables (never cut mid-word without an ellipsis), and every run that was left out named."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

NAME_WIDTH = 48  # the run column: the rest of a summary fits 120 columns


def short_name(run: str) -> str:
    """A HELM run name without `model=...` (it names the submission, said in the title)."""
    head, colon, args = run.partition(":")
    kept = [a for a in args.split(",") if a and not a.startswith("model=")]
    return head + (":" + ",".join(kept) if kept else "")


def left_out_line(not_run: dict[str, str], total: int) -> str | None:
    """'6 of 89 runs not run: gsm (missing ...); ...' or None when every run ran."""
    if not not_run:
        return None
    reasons = "; ".join(f"{short_name(n)} ({why})" for n, why in not_run.items())
    return f"{len(not_run)} of {total} runs not run: {reasons}"


DEMO_BASE = "effbench-demo-base"  # the demo adapter's base_model_name_or_path (effbench/demo.py)


def demo_note(results: dict) -> str | None:
    """What the scores of `effbench demo`'s submission mean (its adapter names the demo base), or
    None for any other submission."""
    import json
    from pathlib import Path

    from effbench.demo import TRAINING_NOTE

    adapter = Path(results["submission"]["folder"]) / "adapter"
    try:
        cfg = json.loads((adapter / "adapter_config.json").read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if cfg.get("base_model_name_or_path") != DEMO_BASE:
        return None
    try:
        t = json.loads((adapter / TRAINING_NOTE).read_text())
    except (OSError, ValueError):
        return ("the demo's model has random weights: its scores are 0 by design (it shows the pipeline, speed and"
                " budget, not quality)")
    return (f"the demo's base has random weights; its adapter was trained {t['steps']} steps on {t['task']}:"
            " dyck scores above the base, the other runs 0 by design")


def _group_rows(runs: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(r["scenario"], []).append(r)
    return groups


def shared_cores_line(results: dict) -> str | None:
    """A line when others took more than the contended share of the cores during execute (as
    check's probe is judged): the run's tokens/s and seconds are this machine's under that load."""
    from effbench.predict.contention import Contention

    ex = (results.get("profile") or {}).get("phases", {}).get("execute", {})
    env = results.get("environment") or {}
    cores = (env.get("cpu_policy") or {}).get("cores") or env.get("cpu_count")
    if "steal_share" not in ex or not cores:
        return None
    c = Contention(ex["seconds"], ex["other_cores"], ex["steal_share"], cores)
    if not c.contended:
        return None
    return (f"execute shared its cores: others took {c.share:.0%} of this process's {cores} cores (the hypervisor's steal"
            f" {c.steal_share:.0%} of their time, other processes {c.other_cores:.2f} cores' worth): its seconds and tokens/s"
            " ran under that load")


def print_summary(results: dict, console: Console, verbose: bool = False) -> None:
    """The summary of a results.json: one row per scenario group (per run with `verbose`), the
    total, the phases, and the runs not run with why."""
    cols = ("run" if verbose else "scenario", "runs" if not verbose else "status", "metric", "score", "requests",
            "prompt", "output", "tok/s", "busy s", "MiB")
    t = Table(title=f"{escape(results['submission']['name'])} on {escape(results['suite']['name'])} (tokens: prompt, output;"
                    " MiB: peak memory)", title_justify="left")
    # the name gives way on a narrow console (with an ellipsis), never a figure: the other columns take ~100
    name_w = max(12, min(NAME_WIDTH, console.width - 101))
    for col in cols:
        texty = col in ("run", "scenario", "metric")
        t.add_column(col, justify="left" if texty else "right", overflow="ellipsis", no_wrap=True,
                     max_width={"run": name_w, "scenario": name_w, "metric": 16}.get(col),
                     min_width=None if texty else max(len(col), 6))
    mib = lambda b: f"{(b or 0) / 2**20:.0f}"  # noqa: E731
    if verbose:
        for r in results["runs"]:
            t.add_row(escape(short_name(r["name"])), r["status"], r["main_metric"] or "-",
                      "-" if r["score"] is None else f"{r['score']:.3f}", str(r["requests"]),
                      str(r["prompt_tokens"]), str(r["output_tokens"]), f"{r.get('tokens_per_s') or 0:.0f}",
                      f"{r.get('busy_seconds') or 0:.1f}", mib(r["peak_memory_bytes"]))
    else:
        for group, rs in _group_rows(results["runs"]).items():
            ran = [r for r in rs if r["status"] != "not_run"]
            scores = [r["score"] or 0.0 for r in rs]
            busy = sum(r.get("busy_seconds") or 0 for r in rs)
            toks = sum(r["prompt_tokens"] + r["output_tokens"] for r in rs)
            metrics = sorted({r["main_metric"] for r in rs if r["main_metric"]})
            t.add_row(escape(group), f"{len(ran)}/{len(rs)}", ", ".join(metrics) or "-", f"{sum(scores) / len(scores):.3f}",
                      str(sum(r["requests"] for r in rs)), str(sum(r["prompt_tokens"] for r in rs)),
                      str(sum(r["output_tokens"] for r in rs)), f"{toks / busy:.0f}" if busy > 0 else "0", f"{busy:.1f}",
                      mib(max((r["peak_memory_bytes"] or 0 for r in rs), default=0)))
    tot = results["totals"]
    ran = tot["runs"] - tot["not_run"]
    t.add_row("[bold]total", f"{ran}/{tot['runs']}", "suite score", "-" if tot["suite_score"] is None else f"{tot['suite_score']:.3f}",
              str(tot["requests"]), str(tot["prompt_tokens"]), str(tot["output_tokens"]),
              f"{tot['tokens_per_s'] or 0:.0f}", f"{tot['execute_seconds']:.1f}", mib(tot["peak_memory_bytes"]))
    console.print(t)
    if tot["errors"]:
        console.print(f"[red]{tot['errors']} requests failed[/] (first errors per run: results.json)", highlight=False)
    ph = ", ".join(f"{k} {v:.1f}s" for k, v in results["phases"].items())
    console.print(f"phases: {ph}; memory source: {results['memory_source']}", highlight=False)
    if (shared := shared_cores_line(results)) is not None:
        console.print(f"[yellow]{escape(shared)}[/]", highlight=False)
    left = left_out_line({r["name"]: r.get("reason") or "not run" for r in results["runs"] if r["status"] == "not_run"},
                         len(results["runs"]))
    if left:
        console.print(f"[yellow]{escape(left)}[/]", highlight=False)
    if (note := demo_note(results)) is not None:
        console.print(note, highlight=False)
    if not verbose:
        console.print("per run: --verbose (every run's full name and figures: results.json)", highlight=False)

"""`effbench fleet status FLEET_OUT`: per submission its state, progress and projected finish
against its budget, read from the files every task writes (no Ray needed)."""

from __future__ import annotations

import warnings
from pathlib import Path

from effbench.contracts import EffbenchError
from effbench.fleet.layout import ENDED, journal_of, read_fleet, read_state, submission_dir


def _progress(journal: Path) -> tuple[int, int | None, float]:
    """(answered, requests, budget seconds used) from a run's journal, as far as it is written."""
    from effbench.execute.journal import budget_timeline, read_journal

    if not journal.is_file():
        return 0, None, 0.0
    with warnings.catch_warnings():  # a live run's last line may be half written: read_journal skips it
        warnings.simplefilter("ignore")
        header, results, events = read_journal(journal)
    _, spent = budget_timeline(results, events)
    return len({r.request_id for r in results if r.ok}), header.get("requests"), spent


def rows(out: Path) -> list[dict]:
    from effbench.challenge.suites import load_suite

    fleet = read_fleet(out)
    budget = fleet["options"].get("budget_minutes")
    if budget is None:
        budget = load_suite(fleet["suite"]).budget_minutes
    table = []
    for name in fleet["submissions"]:
        s = read_state(submission_dir(out, name))
        try:
            answered, requests, spent = _progress(journal_of(out, name))
        except EffbenchError as e:
            answered, requests, spent, s = 0, None, 0.0, {**s, "reason": str(e)}
        if s.get("results"):  # ended: the run's own account (a deadline spent waiting answers nothing)
            from effbench.results import read_results

            spent = read_results(submission_dir(out, name) / s["results"])["budget"]["elapsed_s"]
        projected = spent * requests / answered if s["state"] == "running" and answered and requests else None
        table.append({"submission": name, "state": s["state"], "reason": s.get("reason"), "attempts": s.get("attempts", 0),
                      "node": (s.get("node") or "")[:8] or None, "answered": answered, "requests": requests,
                      "budget_used_min": spent / 60, "projected_min": projected / 60 if projected is not None else None,
                      "budget_min": budget if budget and budget > 0 else None, "suite_score": s.get("suite_score")})
    for path, why in fleet.get("rejected", {}).items():
        table.append({"submission": path, "state": "failed", "reason": f"left out: {why}", "attempts": 0, "node": None,
                      "answered": 0, "requests": None, "budget_used_min": 0.0, "projected_min": None,
                      "budget_min": budget, "suite_score": None})
    return table


def all_ended(table: list[dict]) -> bool:
    return all(r["state"] in ENDED for r in table)


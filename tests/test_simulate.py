"""`effbench simulate` against real runs: at budget B it agrees with an actual run at budget B."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from effbench.cli import app
from effbench.execute.journal import budget_timeline, read_journal
from test_budget import fault_submission

runner = CliRunner()


@pytest.fixture(scope="module")
def full_run(demo_submission, cache_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sim")
    # every batch takes exactly 4 s (compute, then sleep; the demo model's compute stays under 3 s
    # next to two CPU hogs): the journal's timings and a later run's are the same on a busy
    # machine, so the comparison below is not a race against the load
    sub = fault_submission(demo_submission, tmp, batch_s=4.0)
    out = tmp / "full"
    res = runner.invoke(app, ["run", str(sub), "--out", str(out), "--cache-dir", str(cache_dir), "--budget", "none",
                              "--max-eval-instances", "6"])
    assert res.exit_code == 0, res.output
    return sub, out


@pytest.mark.slow
def test_simulate_at_budget_b_matches_a_run_at_budget_b(full_run, cache_dir, tmp_path):
    sub, full = full_run
    _, results, events = read_journal(full / "journal.jsonl")
    at, _ = budget_timeline(results, events)
    landed = sorted(set(round(t, 3) for t in at.values()))
    assert len(landed) >= 4
    budget_s = (landed[1] + landed[2]) / 2  # midway between the 2nd and 3rd batch landing (2 s each side)
    sim_json = tmp_path / "sim.json"
    res = runner.invoke(app, ["simulate", str(full), "--budget", f"{budget_s}s", "--json", str(sim_json)])
    assert res.exit_code == 0, res.output
    (point,) = json.loads(sim_json.read_text())["points"]
    actual_out = tmp_path / "actual"
    res = runner.invoke(app, ["run", str(sub), "--out", str(actual_out), "--cache-dir", str(cache_dir), "--budget", f"{budget_s}s",
                              "--max-eval-instances", "6"])
    assert res.exit_code == 0, res.output
    actual = json.loads((actual_out / "results.json").read_text())
    assert actual["budget"]["deadline_hit"]
    for r in actual["runs"]:  # within one request's worth of items per run
        assert abs(point["answered_per_run"][r["name"]] - r["answered"]) <= 1, (r["name"], point, [(x["name"], x["answered"]) for x in actual["runs"]], landed)
    assert abs(point["answered"] - actual["totals"]["answered"]) <= len(actual["runs"])


def test_simulate_curve_is_monotone_and_complete_at_the_full_budget(full_run, tmp_path):
    _, full = full_run
    out = tmp_path / "curve.json"
    for extra in ([], ["--order", "helm", "--semantics", "helm"]):
        res = runner.invoke(app, ["simulate", str(full), "--budget", "4s,8s,16s,30m", "--json", str(out), *extra])
        assert res.exit_code == 0, res.output
        points = json.loads(out.read_text())["points"]
        answered = [p["answered"] for p in points]
        assert answered == sorted(answered) and answered[-1] == points[-1]["requests"] == 24
        assert points[-1]["runs_finished"] == 4
        assert [p["runs_finished"] for p in points] == sorted(p["runs_finished"] for p in points)


def test_simulate_errors(tmp_path):
    res = runner.invoke(app, ["simulate", str(tmp_path), "--budget", "5m"])
    assert res.exit_code == 2 and "run_config.json: missing" in res.output
    res = runner.invoke(app, ["simulate", str(tmp_path), "--budget", "soon"])
    assert res.exit_code == 2 and "not a duration" in res.output

"""The live terminal view: the budget line's projection and colours, and the view driven by a real
run (a slow fault-injecting backend in process) showing red when the run will not make its budget."""

from __future__ import annotations

import re

import pytest
from rich.console import Console

from effbench.report.live import LiveView, budget_status


@pytest.mark.parametrize(
    "elapsed, done, total, budget, colour",
    [
        (10, 10, 100, 200, "green"),  # projected 100 s of 200
        (10, 10, 100, 105, "yellow"),  # projected 100 s: within the budget, past 90% of it
        (10, 10, 100, 99, "red"),  # projected 100 s: past the budget
        (10, 0, 100, 50, "green"),  # nothing landed yet: no projection, no alarm
        (10, 10, 100, None, "white"),  # no budget
    ],
)
def test_budget_status_projects_at_the_pace_so_far(elapsed, done, total, budget, colour):
    s = budget_status(elapsed, done, total, budget)
    assert s.colour == colour
    assert s.projected_s == (None if done == 0 else pytest.approx(elapsed * total / done))
    line = s.line(1234.5, "RSS 1.00 GiB")
    assert "1,234 tok/s" in line or "1,235 tok/s" in line
    assert ("of 0:" in line) == (budget is not None)


def test_live_view_shows_a_red_projection_for_a_run_past_its_budget(demo_submission, cache_dir, tmp_path):
    from effbench.plan import RunOptions
    from effbench.runner import run_suite
    from effbench.submission import Submission
    from effbench.challenge.suites import load_suite

    sub = tmp_path / "slow"
    import shutil

    shutil.copytree(demo_submission, sub)
    m = sub / "effbench.toml"
    m.write_text(m.read_text().replace('backend = "hf"', 'backend = "fault"') + "\n[backend_args]\ndelay_s = 1.0\n")
    suite = load_suite("default")
    console = Console(record=True, force_terminal=True, width=240, color_system="standard")
    opts = RunOptions(out=tmp_path / "out", cache_dir=cache_dir, budget_minutes=2.5 / 60, in_process=True,
                      max_eval_instances=8)
    with LiveView(console, suite) as view:
        run_suite(Submission.load(sub), suite, opts, view.progress)
    styled = console.export_text(styles=True)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", styled)
    # 32 requests in 4 batches of 8 at >= 1 s each, 2.5 s budget: after the first batch the pace
    # projects >= 4 s, red however slow the machine is (no bound on the projection itself)
    assert re.search(r"projected finish \d+:\d\d:\d\d of 0:00:02 budget", plain), plain[-2000:]
    assert "\x1b[1;31mprojected finish" in styled  # bold red
    assert re.search(r"[\d,]+ tok/s  RSS \d+\.\d\d GiB", plain)

"""kill -9 at a random point, then --resume: the same metrics as an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from effbench.cli import app
from effbench.results import completion_texts
from test_budget import fault_submission

runner = CliRunner()
EFFBENCH = [sys.executable, "-m", "effbench.cli"]


def scores(out: Path) -> dict[str, dict]:
    return {r["name"]: r["metrics"] for r in json.loads((out / "results.json").read_text())["runs"]}


@pytest.mark.slow
def test_kill_9_then_resume_gives_the_metrics_of_an_uninterrupted_run(demo_submission, cache_dir, tmp_path):
    ref = tmp_path / "ref"
    res = runner.invoke(app, ["run", str(demo_submission), "--out", str(ref), "--cache-dir", str(cache_dir), "--order", "helm"])
    assert res.exit_code == 0, res.output

    # 1 s per batch of 8: the run is caught mid-run even when this test process is slow to poll
    sub = fault_submission(demo_submission, tmp_path, delay_s=1.0)
    out = tmp_path / "out"
    journal = out / "journal.jsonl"
    # results journaled before the kill: a replayable draw (EFFBENCH_TEST_SEED=N reruns a failure),
    # at least two batches before the end
    seed = int(os.environ.get("EFFBENCH_TEST_SEED", "20261202"))
    kill_after = random.Random(seed).randint(1, 60)
    proc = subprocess.Popen(EFFBENCH + ["run", str(sub), "--out", str(out), "--cache-dir", str(cache_dir), "--order", "helm"],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if journal.is_file() and journal.read_text().count('"kind": "result"') >= kill_after:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its backend worker, no cleanup
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (out / "results.json").exists()
    journaled = journal.read_text().count('"kind": "result"')
    assert kill_after <= journaled < 80, f"seed {seed}"

    res = runner.invoke(app, ["run", "--resume", str(out)])
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    assert results["budget"]["resumed_results"] == journaled
    assert results["totals"]["answered"] == 80
    assert scores(out) == scores(ref)
    assert completion_texts(out) == completion_texts(ref)


def test_resume_refuses_a_journal_of_another_plan(demo_submission, cache_dir, tmp_path):
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", str(demo_submission), "--out", str(out), "--cache-dir", str(cache_dir),
                              "--runs", "dyck*", "--in-process"])
    assert res.exit_code == 0, res.output
    config = json.loads((out / "run_config.json").read_text())
    config["options"]["run_filter"] = "synthetic_reasoning:mode=induction*"
    (out / "run_config.json").write_text(json.dumps(config))
    res = runner.invoke(app, ["run", "--resume", str(out)])
    assert res.exit_code == 2 and "journal was written for another plan" in res.output


def test_resume_needs_a_run_folder(tmp_path):
    res = runner.invoke(app, ["run", "--resume", str(tmp_path)])
    assert res.exit_code == 2 and "run_config.json: missing" in res.output

"""Nothing lost, whatever fails: each failure of the backend worker injected into a real `effbench
run` (the fault backend in a real worker process, the real demo model and HELM). Afterwards a
results.json that follows its schema, with the right statuses and reasons, and `effbench run
--resume OUT` completes the run: where the fault is one-off, with the metrics and completions of a
run without it. Faults are placed by batch number: the demo's dyck run in helm order is three
batches, of 8, 8 and 4 requests (#0-7, #8-15, #16-19)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from effbench.cli import app
from effbench.contracts import GenerationRequest
from effbench.results import completion_texts, load_results
from effbench.submission import Submission
from effbench.execute.worker import WORKER_NAME, BackendWorker, WorkerCrashed
from test_budget import fault_submission

runner = CliRunner()
DYCK = ["--runs", "dyck*", "--order", "helm"]
EFFBENCH = [sys.executable, "-m", "effbench.cli"]


def run(sub: Path, out: Path, cache_dir: Path, *extra: str, exit_code: int = 0) -> dict:
    res = runner.invoke(app, ["run", str(sub), "--out", str(out), "--cache-dir", str(cache_dir), *DYCK, *extra])
    assert res.exit_code == exit_code, res.output
    return load_results(out)  # schema-checked


def resume(out: Path) -> dict:
    res = runner.invoke(app, ["run", "--resume", str(out)])
    assert res.exit_code == 0, res.output
    return load_results(out)


def outcome(out: Path) -> tuple[dict, dict]:
    """Per run: score and metrics; per run entry: every completion's text."""
    runs = {r["name"]: (r["score"], r["metrics"]) for r in load_results(out)["runs"]}
    return runs, completion_texts(out)


def states(out: Path, results: dict) -> list[dict]:
    """HELM's request states of the (only) run, in request order."""
    return json.loads((out / results["runs"][0]["helm_run_dir"] / "scenario_state.json").read_text())["request_states"]


def counts(results: dict) -> tuple[int, int, int]:
    r = results["runs"][0]
    return r["answered"], r["failed"], r["unanswered"]


@pytest.fixture(scope="module")
def clean(demo_submission, cache_dir, tmp_path_factory) -> Path:
    """The same plan without a fault: what a resumed run must end with."""
    out = tmp_path_factory.mktemp("clean") / "out"
    results = run(demo_submission, out, cache_dir)
    assert counts(results) == (20, 0, 0)
    return out


def one_off(tmp_path: Path, **knobs) -> dict:
    """Knobs for a fault that fires once over all the worker processes of the test."""
    return {"once": True, "state_dir": str(tmp_path / "fault-state"), **knobs}


@pytest.mark.parametrize("knob", [{"die_between_batches_after": 1}, {"crash_on_batch": 2}], ids=["between-batches", "mid-batch"])
def test_a_dead_worker_costs_one_batch_then_resume_completes(knob, demo_submission, cache_dir, tmp_path, clean):
    sub = fault_submission(demo_submission, tmp_path, **one_off(tmp_path, **knob))
    out = tmp_path / "out"
    results = run(sub, out, cache_dir)
    b = results["budget"]
    assert counts(results) == (12, 8, 0)  # the second batch is lost, as failed results with the reason
    assert b["worker_restarts"] == 1 and b["stopped"] is None
    assert len(b["crashes"]) == 1 and "backend process died" in b["crashes"][0] and "exit code 13" in b["crashes"][0]
    assert [s["result"].get("error", "").startswith("backend crashed") for s in states(out, results)] == [False] * 8 + [True] * 8 + [False] * 4

    again = resume(out)
    assert counts(again) == (20, 0, 0) and again["budget"]["resumed_results"] == 12  # the failed batch runs again
    assert outcome(out) == outcome(clean)


def test_a_restart_that_fails_leaves_the_rest_not_started_then_resume_completes(demo_submission, cache_dir, tmp_path, clean):
    # The worker dies on batch 2; its two restarts (starts 2 and 3) fail; the resume's start (4) works.
    sub = fault_submission(demo_submission, tmp_path, **one_off(tmp_path, crash_on_batch=2, fail_starts=[2, 3]))
    out = tmp_path / "out"
    results = run(sub, out, cache_dir)
    b = results["budget"]
    assert counts(results) == (8, 8, 4) and results["runs"][0]["status"] == "partial"
    assert b["worker_restarts"] == 2 and b["not_started"] == 4 and b["cancelled"] == 0
    assert "backend process died" in b["crashes"][0]
    assert all(f"restart {i} failed" in c and "injected start failure" in c for i, c in zip((1, 2), b["crashes"][1:]))
    assert b["stopped"].startswith("the backend worker could not be restarted")

    again = resume(out)
    assert counts(again) == (20, 0, 0)
    assert outcome(out) == outcome(clean)


def test_a_reply_too_slow_is_cancelled_at_the_deadline_then_resume_completes(demo_submission, cache_dir, tmp_path, clean):
    # The third batch hangs (once); the deadline cancels it. The budget only has to cover the
    # two batches before it and, on resume, the four requests of the third (it was not spent).
    sub = fault_submission(demo_submission, tmp_path, **one_off(tmp_path, hang_on_batch=3))
    out = tmp_path / "out"
    results = run(sub, out, cache_dir, "--budget", "30s")
    b = results["budget"]
    assert counts(results) == (16, 0, 4) and results["runs"][0]["status"] == "partial"
    assert b["deadline_hit"] and b["stopped"] == "deadline" and b["cancelled"] == 4 and b["not_started"] == 0
    assert [s["result"].get("error") for s in states(out, results)][16:] == ["not answered before the deadline"] * 4

    again = resume(out)
    assert counts(again) == (20, 0, 0)
    assert outcome(out) == outcome(clean)


def test_a_wrong_result_count_is_retried_in_halves(demo_submission, cache_dir, tmp_path, clean):
    sub = fault_submission(demo_submission, tmp_path, wrong_count_on_batch=1)  # calls 2 and 3 (the halves) are fine
    out = tmp_path / "out"
    results = run(sub, out, cache_dir)
    b = results["budget"]
    assert counts(results) == (20, 0, 0) and b["worker_restarts"] == 0
    assert b["crashes"] == ["backend returned 7 results for a batch of 8"]
    assert outcome(out) == outcome(clean)


def test_a_bad_request_fails_alone_its_batch_mates_are_answered(demo_submission, cache_dir, tmp_path, clean):
    sub = fault_submission(demo_submission, tmp_path, raise_on_request="#5")  # every batch holding dyck...#5 raises
    out = tmp_path / "out"
    results = run(sub, out, cache_dir)
    assert counts(results) == (19, 1, 0) and results["budget"]["worker_restarts"] == 0
    errors = [s["result"].get("error") for s in states(out, results)]
    assert "injected error for the request ending '#5'" in errors[5]
    assert errors[:5] + errors[6:] == [None] * 19
    texts, ref = completion_texts(out), completion_texts(clean)
    (entry,) = texts
    assert texts[entry][:5] + texts[entry][6:] == ref[entry][:5] + ref[entry][6:]


def test_a_broken_backend_is_restarted_after_three_failing_batches(demo_submission, cache_dir, tmp_path, clean):
    # Batches of 2 (10 in all). From the third call on, the first worker raises on everything (a
    # broken CUDA context): batches 3, 4 and 5 fail whole (3 calls each: the pair, then each alone),
    # then the worker is restarted and the new one (the fault was once) answers batches 6-10.
    sub = fault_submission(demo_submission, tmp_path, max_batch_size=2, **one_off(tmp_path, broken_from_batch=3))
    out = tmp_path / "out"
    results = run(sub, out, cache_dir)
    b = results["budget"]
    assert counts(results) == (14, 6, 0) and b["worker_restarts"] == 1
    assert any("3 batches in a row: restarting the worker" in c for c in b["crashes"])
    errors = [s["result"].get("error") for s in states(out, results)]
    assert [e is not None and "injected broken backend" in e for e in errors] == [False] * 4 + [True] * 6 + [False] * 10

    again = resume(out)
    assert counts(again) == (20, 0, 0)
    assert outcome(out) == outcome(clean)


def test_slow_allocator_stats_do_not_lose_the_run(demo_submission, cache_dir, tmp_path, clean):
    sub = fault_submission(demo_submission, tmp_path, slow_stats_s=3600)
    out = tmp_path / "out"
    results = run(sub, out, cache_dir)
    assert counts(results) == (20, 0, 0)
    allocator = results["profile"]["allocator"]
    assert allocator["source"] == "unavailable" and "no answer within" in allocator["error"]
    assert outcome(out) == outcome(clean)


def _worker_of(proc: subprocess.Popen, journal: Path, timeout_s: float = 300) -> psutil.Process:
    """The backend worker of an `effbench run` subprocess, once it is executing (journal has begun)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended early"
        kids = [p for p in psutil.Process(proc.pid).children(recursive=True) if _name(p) == WORKER_NAME]
        if kids and journal.is_file() and '"kind": "execute"' in journal.read_text():
            return kids[0]
        time.sleep(0.1)
    raise AssertionError("no worker executing")


def _name(p: psutil.Process) -> str | None:
    try:
        return p.name()
    except psutil.NoSuchProcess:
        return None


def _gone(p: psutil.Process, timeout_s: float = 30) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _spawn(sub: Path, out: Path, cache_dir: Path, log: Path) -> subprocess.Popen:
    with log.open("wb") as f:
        return subprocess.Popen(EFFBENCH + ["run", str(sub), "--out", str(out), "--cache-dir", str(cache_dir), *DYCK,
                                            "--budget", "none"], stdout=f, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen, worker: psutil.Process | None) -> None:
    """Clean-up of a test that failed half-way: the processes it started, by their id."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(30)
    if worker is not None:
        _stop_process(worker)


def _stop_process(p: psutil.Process) -> None:
    if not _gone(p, 0):
        with contextlib.suppress(psutil.NoSuchProcess):  # it may end between the look and the kill
            p.kill()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_cleanly_writes_results_and_resume_completes(signum, demo_submission, cache_dir, tmp_path, clean):
    """SIGTERM (a job scheduler's stop) or SIGINT (Ctrl-C) while the worker hangs in batch 2."""
    sub = fault_submission(demo_submission, tmp_path, **one_off(tmp_path, hang_on_batch=2))
    out = tmp_path / "out"
    proc = _spawn(sub, out, cache_dir, tmp_path / "run.log")
    worker = None
    try:
        worker = _worker_of(proc, out / "journal.jsonl")
        deadline = time.monotonic() + 300
        while (out / "journal.jsonl").read_text().count('"kind": "result"') < 8:  # batch 1 landed; batch 2 hangs
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "run.log").read_text()
            time.sleep(0.1)
        proc.send_signal(signum)
        code = proc.wait(120)
    finally:
        _stop(proc, worker)
    log = (tmp_path / "run.log").read_text()
    assert code != 0, log
    assert _gone(worker), "the worker outlived the stop"
    results = load_results(out)
    b = results["budget"]
    assert b["stopped"] == f"interrupted by {signum.name}" and not b["deadline_hit"]
    assert counts(results) == (8, 0, 12) and b["cancelled"] == 8 and b["not_started"] == 4
    assert "resume" in log

    again = resume(out)
    assert counts(again) == (20, 0, 0) and again["budget"]["stopped"] is None
    assert outcome(out) == outcome(clean)


@pytest.mark.slow
def test_kill_9_of_the_main_process_takes_the_worker_and_its_children_with_it(demo_submission, cache_dir, tmp_path):
    # The worker hangs in its first batch; its backend has a process of its own (as vLLM's engine core).
    sub = fault_submission(demo_submission, tmp_path, hang_on_batch=1, child_process=True)
    out = tmp_path / "out"
    proc = _spawn(sub, out, cache_dir, tmp_path / "run.log")
    worker, family = None, []
    try:
        worker = _worker_of(proc, out / "journal.jsonl")
        family = [worker, *worker.children(recursive=True)]
        assert len(family) >= 3, family  # the worker, its reaper, the backend's child
        os.kill(proc.pid, signal.SIGKILL)  # no clean-up of any kind in the main process
        proc.wait(30)
        left = [p for p in family if not _gone(p, 30)]
        assert not left, f"outlived the main process: {[(p.pid, _name(p)) for p in left]}"
    finally:
        _stop(proc, worker)
        for p in family[1:]:
            _stop_process(p)


def test_a_send_to_a_dead_worker_is_a_crash_not_a_broken_pipe(demo_submission, cache_dir):
    """The parent's send is where a worker that died between batches shows first."""
    worker = BackendWorker(Submission.load(demo_submission), cache_dir)
    worker.start()
    try:
        pid = worker.pid
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while worker.alive:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(WorkerCrashed, match="died between batches"):
            worker.generate([GenerationRequest(id="x#0", prompt="one two", max_tokens=2)])
        assert worker.allocator_stats() == {"source": "unavailable", "error": "backend process is not running"}
    finally:
        worker.kill()

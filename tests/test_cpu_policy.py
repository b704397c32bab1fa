"""The backend worker owns its threads (effbench/execute/cpu.py): a yielding OpenMP wait policy
unless the user chose one, one OpenMP runtime mapped into the process, torch threads = the cores
of its affinity mask; and results.json records it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from effbench.execute.worker import BackendWorker
from effbench.submission import Submission


@pytest.fixture(scope="module")
def worker_info(demo_submission, cache_dir):
    w = BackendWorker(Submission.load(demo_submission), cache_dir)
    try:
        yield w.start(timeout=900)
    finally:
        w.close()


def test_the_worker_runs_one_openmp_runtime_with_a_yielding_wait(worker_info, monkeypatch):
    policy = worker_info.cpu
    expected = os.environ.get("OMP_WAIT_POLICY", "PASSIVE")
    assert policy["omp_wait_policy"] == expected
    assert len(policy["openmp_runtimes"]) == 1, policy["openmp_runtimes"]  # torch's libgomp only
    assert policy["openmp_runtimes"][0].startswith("libgomp"), policy
    assert "sklearn" in policy["blocked_modules"]
    assert policy["torch_threads"] == policy["cores"] == len(os.sched_getaffinity(0))


def test_without_the_policy_transformers_maps_a_second_runtime(demo_submission):
    """The reason for blocking: in this environment (HELM brings scikit-learn), importing what the
    HF backend imports maps scikit-learn's own libgomp next to torch's."""
    code = ("import effbench.backends.hf_load, transformers.generation\n"
            "from effbench.execute.cpu import openmp_runtimes\nprint(len(openmp_runtimes()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True)
    assert int(out.stdout.split()[-1]) >= 2, out.stdout


def test_a_users_wait_policy_is_kept(demo_submission, cache_dir, monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.delenv("EFFBENCH_OMP_WAIT_POLICY", raising=False)
    w = BackendWorker(Submission.load(demo_submission), cache_dir)
    try:
        info = w.start(timeout=900)
    finally:
        w.close()
    assert info.cpu["omp_wait_policy"] == "ACTIVE" and info.cpu["chosen_by"] == "user"


def test_a_users_thread_count_is_kept(demo_submission, cache_dir, monkeypatch):
    """OMP_NUM_THREADS fixes the worker's torch threads (one thread beat two beside busy processes
    on the demo model, and lost on the ~100M one: README, "Own the CPU")."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    w = BackendWorker(Submission.load(demo_submission), cache_dir)
    try:
        info = w.start(timeout=900)
    finally:
        w.close()
    assert info.cpu["torch_threads"] == 1 and info.cpu["cores"] == len(os.sched_getaffinity(0))


def test_results_json_records_the_policy(demo_submission, cache_dir, tmp_path):
    from typer.testing import CliRunner

    from effbench.cli import app

    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["run", str(demo_submission), "--out", str(out), "--cache-dir", str(cache_dir),
                                   "--max-eval-instances", "2", "--runs", "*pattern*", "--budget", "none"])
    assert res.exit_code == 0, res.output
    policy = json.loads((out / "results.json").read_text())["environment"]["cpu_policy"]
    assert policy["omp_wait_policy"] and len(policy["openmp_runtimes"]) == 1

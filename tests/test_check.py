"""`effbench check` end to end on a machine with no GPU: verdict, interval, per-run projections,
memory fit, exit codes; on the demo model and on a ~100M-parameter Llama."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from effbench.cli import app
from effbench.submission import Submission

runner = CliRunner()


def check(sub, cache_dir, tmp_path, *extra, name="c"):
    out = tmp_path / f"{name}.json"
    res = runner.invoke(app, ["check", str(sub), "--suite", "default", "--probe", "0.1", "--out", str(tmp_path / name),
                              "--cache-dir", str(cache_dir), "--json", str(out), *extra])
    return res, (json.loads(out.read_text()) if out.is_file() else None)


def test_check_passes_a_generous_budget_and_fails_a_tiny_one(demo_submission, cache_dir, tmp_path):
    # the challenge's open budget: next to other work check widens its interval by the cores others
    # took, so a budget near the demo's quiet time (10 m) made the verdict depend on the machine's load
    res, rep = check(demo_submission, cache_dir, tmp_path, "--budget", "300m", "--in-process")
    assert res.exit_code == 0 and rep["verdict"] == "PASS" and "PASS" in res.output, res.output
    pm = rep["projected_minutes"]
    assert 0 < pm["p05"] <= pm["median"] <= pm["p95"] < 300
    assert rep["probe"]["requests"] == 8 and rep["probe"]["fraction"] <= 0.1
    assert len(rep["runs"]) == 4 and all(r["projected_finish_min"] > 0 and r["probed"] == 2 for r in rep["runs"])
    assert rep["runs_past_budget"] == 0 and rep["items_past_budget"] == 0
    assert rep["memory"]["fits"] and "fits on here" in rep["memory"]["summary"]
    assert set(rep["cost_model"]) == {"fixed", "prefill_tokens", "decode_steps", "decoded_tokens"}
    from effbench.execute.journal import read_journal

    header, probed, _ = read_journal(tmp_path / "c" / "probe-journal.jsonl")  # what the model was fitted on, kept
    assert header["requests"] == 8 and all(r.ok for r in probed)
    # and the calibration batches: the probe's longest generation prompt at the full batch width,
    # decoding a short and a long stretch (bounded by its max_tokens), journaled after the probe
    cals = rep["probe"]["calibration"]
    width = Submission.load(demo_submission).manifest.limits.max_batch_size
    assert [r.request_id for r in probed[8:]] == [c["request"] for c in cals] and 1 <= len(cals) <= 2
    assert all(c["rows"] == width > 1 and c["decoded_tokens"] > 0 and c["seconds"] > 0 for c in cals)
    assert all(len(r.completions) == width for r in probed[8:])
    assert [c["decoded_tokens"] for c in cals] == sorted(c["decoded_tokens"] for c in cals)

    res, rep = check(demo_submission, cache_dir, tmp_path, "--budget", "0.01s", "--in-process", name="tiny")
    assert res.exit_code == 2 and rep["verdict"] == "FAIL" and "FAIL" in res.output
    assert rep["runs_past_budget"] > 0 and rep["items_past_budget"] > 0


def test_check_translates_to_a_target_card(demo_submission, cache_dir, tmp_path):
    _, here = check(demo_submission, cache_dir, tmp_path, "--in-process", name="here")
    res, a100 = check(demo_submission, cache_dir, tmp_path, "--in-process", "--track", "a100-40gb", name="a100")
    assert res.exit_code in (0, 1), res.output
    assert a100["track"] == "a100-40gb" and a100["hardware"]["translated"] and not here["hardware"]["translated"]
    assert a100["hardware"]["target"]["memory_bytes"] == 40 * 2**30
    assert a100["projected_minutes"]["median"] < here["projected_minutes"]["median"]  # a faster card
    assert "on a100-40gb" in a100["memory"]["summary"]


def test_check_errors_exit_3(demo_submission, cache_dir, tmp_path):
    res, _ = check(demo_submission, cache_dir, tmp_path, "--track", "tpu-v9", "--in-process")
    assert res.exit_code == 3 and "--track" in res.output
    res = runner.invoke(app, ["check", str(demo_submission), "--suite", "default", "--probe", "2"])
    assert res.exit_code == 3 and "--probe" in res.output


@pytest.mark.slow
def test_check_on_a_100m_model(tmp_path_factory, cache_dir, tmp_path):
    from effbench.demo import build_demo

    sub = build_demo(tmp_path_factory.mktemp("m100") / "sub", hidden_size=768, num_layers=12, num_heads=12,
                     intermediate_size=2048, model_vocab_size=8192, name="m100")
    res, rep = check(sub, cache_dir, tmp_path, "--runs", "dyck*", "--budget", "300m")
    assert res.exit_code == 0 and rep["verdict"] == "PASS", res.output
    assert rep["memory"]["fits"] and rep["load"]["name"] == "hf"
    assert 0.09e9 < json.loads(json.dumps(rep["memory"]))["total_bytes"]
    assert rep["projected_minutes"]["p95"] >= rep["projected_minutes"]["median"] > 0


def test_check_sees_other_work_on_the_cores_and_widens_its_interval(demo_submission, cache_dir, tmp_path):
    """A busy process on every core during the probe: check says so and widens the interval by
    the share the others took (on a machine busy already, the hogs only add to it)."""
    import os
    import signal
    import subprocess
    import sys

    from effbench.execute.cpu import cores

    # The hogs must not be this process's children: check counts its own process tree as "ours"
    # (the worker is a child), so they are started through a shell that exits at once.
    hog = f"{sys.executable} -c 'while True: pass' >/dev/null 2>&1 & echo $!"
    pids = [int(subprocess.run(["sh", "-c", hog], capture_output=True, text=True, check=True).stdout) for _ in range(cores())]
    try:
        res, rep = check(demo_submission, cache_dir, tmp_path, "--in-process", name="hog")
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
    assert res.exit_code in (0, 1), res.output
    c = rep["contention"]
    assert c["contended"] and c["other_cores"] > 0.3 and c["interval_widened_by"] == pytest.approx(1 + c["share"], abs=1e-3)
    assert 0 <= c["steal_share"] < 1 and 0 <= c["usual_steal_share"] < 1  # this process's cores, during the probe and since boot
    assert "contention:" in res.output and "widened" in res.output
    pm = rep["projected_minutes"]
    assert pm["p05"] <= pm["median"] <= pm["p95"]

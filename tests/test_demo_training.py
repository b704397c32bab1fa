"""`effbench demo` trains its adapter briefly on synthetic Dyck completions (issue 18 point 7):
the default suite's dyck run then scores above the random base and above 0, and the summary says
what the demo's scores mean."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from effbench.demo import TRAINING_NOTE, build_demo, dyck_example

EFFBENCH = [sys.executable, "-m", "effbench.cli"]


def test_dyck_examples_leave_one_to_three_brackets_open_and_close_them():
    rng = random.Random(0)
    for _ in range(200):
        x, y = dyck_example(rng, 52, 100)
        seq = x.split() + y.split()
        stack = []
        for s in seq:  # the prefix plus its answer is balanced, the answer only closings
            if s in "([":
                stack.append(")" if s == "(" else "]")
            else:
                assert stack.pop() == s
        assert not stack and 1 <= len(y.split()) <= 3 and set(y.split()) <= {")", "]"}
        assert 52 <= len(x.split()) <= 101


def _dyck_score(sub, out, cache_dir) -> tuple[float, str]:
    proc = subprocess.run([*EFFBENCH, "run", str(sub), "--runs", "dyck*", "--cache-dir", str(cache_dir), "--out", str(out),
                           "--in-process"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    return results["totals"]["suite_score"], proc.stdout


def test_the_trained_demo_scores_above_its_random_base(tmp_path, cache_dir):
    trained = build_demo(tmp_path / "trained", train_steps=60)
    note = json.loads((trained / "adapter" / TRAINING_NOTE).read_text())
    assert note["steps"] == 60
    base = build_demo(tmp_path / "base", with_adapter=False)  # the same random base (same seed), no adapter
    score, stdout = _dyck_score(trained, tmp_path / "run-trained", cache_dir)
    base_score, _ = _dyck_score(base, tmp_path / "run-base", cache_dir)
    assert score > base_score and score > 0, (score, base_score)
    assert "its adapter was trained 60 steps" in " ".join(stdout.split()), stdout

"""Regression tracking: real pytest-benchmark runs (in a pytester subprocess) of a benchmark that
tracks its time, compared by `effbench bench-compare`: the same build passes, a deliberately
slowed build fails with exit 1; plus the comparison's rules and its input errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from effbench.cli import app
from effbench.report.regress import Threshold, compare

pytest_plugins = ["pytester"]
runner = CliRunner()

BENCH = '''
import os, time

def work():
    # a fixed amount of pure-Python work; SLOWDOWN multiplies it (the "slowed build")
    n = 200_000 * int(os.environ.get("SLOWDOWN", "1"))
    s = 0
    for i in range(n):
        s += i * i
    return s

def test_work(benchmark):
    benchmark.pedantic(work, rounds=5, warmup_rounds=1, iterations=1)
    best = benchmark.stats.stats.min  # the least disturbed round: other processes only add time
    benchmark.extra_info["tracked"] = {
        "work_s": {"value": best, "better": "lower", "unit": "s"},
        "work_per_s": {"value": 1 / best, "better": "higher", "unit": "1/s"},
    }
'''


def _bench_json(pytester, name: str, slowdown: int):
    pytester.makepyfile(test_bench=BENCH)
    out = pytester.path / f"{name}.json"
    pytester._monkeypatch.setenv("SLOWDOWN", str(slowdown))
    res = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", "--benchmark-only", f"--benchmark-json={out}")
    res.assert_outcomes(passed=1)
    return out


def test_bench_compare_passes_the_same_build_and_fails_a_slowed_one(pytester):
    base = _bench_json(pytester, "baseline", 1)
    same = _bench_json(pytester, "same", 1)
    slow = _bench_json(pytester, "slow", 10)
    th = pytester.path / "thresholds.toml"
    # Both figures allow 3x: 10x slower is far past it; a busy machine's noise on the best of 5
    # rounds is not, even with the baseline measured idle and the same build next to a CPU hog.
    th.write_text("[default]\nrelative = 2.0\n[figures.work_per_s]\nrelative = 0.667\n")

    ok = runner.invoke(app, ["bench-compare", str(same), "--baseline", str(base), "--thresholds", str(th)])
    assert ok.exit_code == 0, ok.output
    assert "REGRESSED" not in ok.output and "work_s" in ok.output

    bad = runner.invoke(app, ["bench-compare", str(slow), "--baseline", str(base), "--thresholds", str(th)])
    assert bad.exit_code == 1, bad.output
    assert "2 regressed: work_per_s, work_s" in bad.output
    slow_s = json.loads(slow.read_text())["benchmarks"][0]["extra_info"]["tracked"]["work_s"]["value"]
    base_s = json.loads(base.read_text())["benchmarks"][0]["extra_info"]["tracked"]["work_s"]["value"]
    assert slow_s > 3 * base_s  # the slowed build really was slower, measured by pytest-benchmark


def _fig(v, better="lower", unit="s"):
    return {"value": v, "better": better, "unit": unit}


def test_compare_rules():
    base = {"t": _fig(10.0), "tps": _fig(100.0, "higher", "tok/s"), "err": _fig(0.05, "lower", "fraction"), "gone": _fig(1.0)}
    cur = {"t": _fig(12.4), "tps": _fig(76.0, "higher", "tok/s"), "err": _fig(0.14, "lower", "fraction"), "new": _fig(3.0)}
    rows = {c.name: c for c in compare(cur, base, Threshold(relative=0.25), {"err": Threshold(absolute=0.10)})}
    assert not rows["t"].regressed and rows["t"].limit == pytest.approx(12.5)  # 24% slower: within 25%
    assert not rows["tps"].regressed and rows["tps"].limit == pytest.approx(75.0)  # higher is better: 24% fewer
    assert not rows["err"].regressed and rows["err"].limit == pytest.approx(0.15)  # absolute slack for an error
    assert rows["gone"].regressed and rows["gone"].note == "missing from this run"
    assert not rows["new"].regressed and rows["new"].baseline is None
    worse = {"t": _fig(12.6), "tps": _fig(74.0, "higher", "tok/s"), "err": _fig(0.16, "lower", "fraction"), "gone": _fig(1.0)}
    rows = {c.name: c for c in compare(worse, base, Threshold(relative=0.25), {"err": Threshold(absolute=0.10)})}
    assert rows["t"].regressed and rows["tps"].regressed and rows["err"].regressed and not rows["gone"].regressed


def test_bench_compare_bad_input_names_the_file_and_field(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"benchmarks": [{"name": "x", "extra_info": {"tracked": {"a": _fig(1.0)}}}]}))
    th = tmp_path / "th.toml"
    th.write_text("[default]\nrelative = 0.2\n")
    cases = [
        (tmp_path / "absent.json", th, "absent.json: not found"),
        (tmp_path / "notbench.json", th, "field 'benchmarks': missing"),
        (tmp_path / "badfig.json", th, "field 'benchmarks[x].extra_info.tracked.a'"),
        (good, tmp_path / "badth.toml", "field 'figures.a.relative'"),
    ]
    (tmp_path / "notbench.json").write_text("{}")
    (tmp_path / "badfig.json").write_text(json.dumps({"benchmarks": [{"name": "x", "extra_info": {"tracked": {"a": {"value": "fast"}}}}]}))
    (tmp_path / "badth.toml").write_text("[figures.a]\nrelative = -1\n")
    for current, thresholds, message in cases:
        res = runner.invoke(app, ["bench-compare", str(current), "--baseline", str(good), "--thresholds", str(thresholds)])
        assert res.exit_code == 2, res.output
        assert message in res.output and len(res.output.strip().splitlines()) == 1, res.output

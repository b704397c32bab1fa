"""`effbench fleet` and `effbench run --shards` on a real local Ray cluster that this module starts
(ray.cluster_utils: a head that holds no slot, and two nodes of one `effbench_slot` each, all on
127.0.0.1), shared by the tests here and shut down at the end. The commands run as subprocesses
that connect to it with --address, as a user's would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before Ray loads: the cluster on 127.0.0.1 only
os.environ.setdefault("RAY_worker_niceness", "0")  # its raylets start workers at the default priority, as the driver's do
ray = pytest.importorskip("ray", reason="the `fleet` extra (ray) is not installed; scripts/install installs it")

from effbench.fleet.plan import lpt, makespan, shard_split, slot_plan  # noqa: E402

EFFBENCH = [sys.executable, "-m", "effbench.cli"]
SLOT = "effbench_slot"
pytestmark = pytest.mark.timeout(900)


# ---------------------------------------------------------------- plans (no cluster)


def test_lpt_balances_longest_first_and_shards_keep_suite_order():
    costs = {"a": 7.0, "b": 5.0, "c": 4.0, "d": 3.0, "e": 1.0}
    bins = lpt(costs, 2)
    assert sorted(map(sorted, bins)) == [["a", "d"], ["b", "c", "e"]]  # 10 and 10
    assert makespan(costs, 2) == 10.0
    split = shard_split(costs, 2, ["e", "d", "c", "b", "a", "z"])  # z: no request, weighs nothing, still placed
    assert sorted(e for s in split for e in s) == ["a", "b", "c", "d", "e", "z"]
    for s in split:
        assert s == sorted(s, key=["e", "d", "c", "b", "a", "z"].index)
    assert len(shard_split(costs, 9, list(costs))) == 5  # never an empty shard


def test_slot_plan_uses_check_projections_and_caps_them_at_the_budget(tmp_path, monkeypatch):
    from effbench.fleet import plan as fleet_plan

    check = {"projected_minutes": {"median": 100.0, "p95": 400.0}, "verdict": "AT RISK"}  # the two fields it reads
    monkeypatch.setattr(fleet_plan, "_projection", lambda checks, name: check if name == "x" else None)
    p = slot_plan(["x", "y"], 300.0, 2, tmp_path, tracks=2)
    rows = {r["submission"]: r for r in p["submissions"]}
    assert rows["x"]["source"] == "check" and rows["x"]["median_min"] == 100.0 and rows["x"]["p95_min"] == 300.0
    assert rows["y"]["source"] == "budget (no check)" and rows["y"]["p95_min"] == 300.0
    assert p["slot_hours"]["median"] == pytest.approx((100 + 300) / 60 * 2)
    assert p["wall_hours"]["p95"] == pytest.approx(300 / 60 * 2)  # two slots side by side, per track


# ---------------------------------------------------------------- on the cluster


@pytest.fixture(scope="session")
def ray_cluster():
    from ray.cluster_utils import Cluster

    # nodes declared dead ~2 s after their raylet stops answering (default: ~30 s)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False,
        "_system_config": {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                           "health_check_failure_threshold": 4, "health_check_timeout_ms": 500}})
    for _ in range(2):
        cluster.add_node(num_cpus=1, resources={SLOT: 1})
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def _submission(src: Path, where: Path, name: str, *, backend: str = "hf", args: str = "", batch: int | None = None) -> Path:
    """A copy of the demo submission under another name (and backend, [backend_args], batch size)."""
    shutil.copytree(src, where, ignore=shutil.ignore_patterns("effbench-out"))
    m = (where / "effbench.toml").read_text()
    m = m.replace('name = "demo"', f'name = "{name}"').replace('backend = "hf"', f'backend = "{backend}"')
    if batch is not None:
        import re

        m = re.sub(r"max_batch_size = \d+", f"max_batch_size = {batch}", m)
    (where / "effbench.toml").write_text(m + (f"\n[backend_args]\n{args}\n" if args else ""))
    return where


def _effbench(*args, timeout=600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*EFFBENCH, *map(str, args)], capture_output=True, text=True, timeout=timeout, **kw)


def _state(folder: Path) -> dict:
    return json.loads((folder / "state.json").read_text())


def _metrics(results: Path) -> dict:
    """What an evaluation decides: scores and metrics per run, and every completion's text
    (the demo's random model scores 0 everywhere; its texts tell runs apart)."""
    from effbench.results import completion_texts

    data = json.loads(results.read_text())
    return {"suite_score": data["totals"]["suite_score"], "texts": completion_texts(results.parent),
            "runs": [(r["name"], r["status"], r["score"], r.get("metrics"), r["requests"], r["output_tokens"]) for r in data["runs"]]}


@pytest.fixture(scope="session")
def reference_run(demo_submission, tmp_path_factory):
    """An uninterrupted, unsharded `effbench run` of the demo at batch 2, 2 instances per run."""
    tmp = tmp_path_factory.mktemp("fleet-ref")
    sub = _submission(demo_submission, tmp / "sub", "ref", batch=2)
    proc = _effbench("run", sub, "--max-eval-instances", 2, "--out", tmp / "out")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "out" / "results.json"


def test_fleet_runs_the_good_ranks_them_and_leaves_the_bad_out(ray_cluster, demo_submission, tmp_path):
    subs = tmp_path / "subs"
    _submission(demo_submission, subs / "a", "sub-a")
    _submission(demo_submission, subs / "b", "sub-b", backend="fault", args="hang_on_batch = 1")  # never answers
    bad = _submission(demo_submission, subs / "c", "sub-c")
    (bad / "effbench.toml").write_text((bad / "effbench.toml").read_text().replace("max_batch_size = 8", 'max_batch_size = "eight"'))
    out = tmp_path / "fleet"

    # the plan from a real `effbench check` of sub-a; sub-b has none: its budget is its bound
    chk = _effbench("check", subs / "a", "--suite", "default", "--max-eval-instances", 2, "--out", tmp_path / "checks" / "sub-a")
    assert chk.returncode in (0, 1), chk.stderr[-3000:]
    projected = json.loads((tmp_path / "checks" / "sub-a" / "check.json").read_text())["projected_minutes"]
    dry = _effbench("fleet", subs, "--dry-run", "--suite", "default", "--budget", "30s", "--slots", 2, "--tracks", 2,
                    "--checks", tmp_path / "checks", "--out", out)
    assert dry.returncode == 0, dry.stderr[-3000:]
    rows = {ln.split("│")[1].strip(): ln for ln in dry.stdout.splitlines() if ln.count("│") > 3}
    assert set(rows) >= {"sub-a", "sub-b"} and "sub-c" not in rows
    assert "check" in rows["sub-a"] and f"{min(projected['median'], 0.5):.1f}" in rows["sub-a"]
    assert "budget (no check)" in rows["sub-b"] and "0.5" in rows["sub-b"]
    b_hours = 0.5 / 60 * 2  # sub-b at its whole budget, on both tracks
    assert f"slot-hours: {min(projected['median'], 0.5) / 60 * 2 + b_hours:.2f} (median)" in " ".join(dry.stdout.split())
    assert f"left out: {bad / 'effbench.toml'}: field 'limits.max_batch_size'" in " ".join(dry.stderr.split())
    assert not out.exists()  # nothing scheduled, nothing written

    proc = _effbench("fleet", subs, "--address", ray_cluster.address, "--max-eval-instances", 2, "--budget", "30s", "--out", out)
    assert proc.returncode == 1, proc.stderr[-3000:]  # one submission was left out
    a, b = _state(out / "sub-a"), _state(out / "sub-b")
    assert a["state"] == "finished" and a["attempts"] == 1 and a["reason"] is None
    assert a["niceness"] == 0  # not Ray's default 15 for its workers
    assert b["state"] == "partial" and b["reason"].startswith("deadline hit: 0 of 8")
    assert a["ended"] < b["ended"]  # the one out of time did not hold the other up: they ran side by side
    results = json.loads((out / "sub-b" / "run" / "results.json").read_text())
    assert results["budget"]["deadline_hit"] and results["budget"]["minutes"] == 0.5
    ranking = json.loads((out / "ranking.json").read_text())
    ranked = {s["name"] for t in ranking["tracks"] for s in t["submissions"]}
    assert ranked == {"sub-a", "sub-b"}

    status = _effbench("fleet", "status", out)
    assert status.returncode == 0, status.stderr[-3000:]
    lines = {ln.split("│")[1].strip(): ln for ln in status.stdout.splitlines() if ln.count("│") > 3}
    assert "finished" in lines["sub-a"] and "8/8" in lines["sub-a"]
    assert "partial" in lines["sub-b"] and "0/8" in lines["sub-b"]
    assert "left out" in status.stdout and "sub-a" in status.stdout.split("track local")[1]


def _node_of(cluster, node_id: str):
    return next(n for n in cluster.list_all_nodes() if n.node_id == node_id)


def test_a_lost_node_s_submission_resumes_on_the_other_and_scores_the_same(ray_cluster, demo_submission, reference_run, tmp_path):
    # the same model and batch size as the reference, slowed down (the answers do not change) so
    # that the kill lands mid-run
    # (named as the reference: HELM's run names carry it)
    sub = _submission(demo_submission, tmp_path / "subs" / "d", "ref", backend="fault", args="delay_s = 1.5", batch=2)
    out = tmp_path / "fleet"
    proc = subprocess.Popen([*EFFBENCH, "fleet", str(sub), "--address", ray_cluster.address, "--max-eval-instances", "2",
                             "--budget", "none", "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        journal = out / "ref" / "run" / "journal.jsonl"
        deadline = time.monotonic() + 600
        while not (journal.is_file() and journal.read_text().count('{"kind": "result"') >= 2):
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the run never answered two requests"
            time.sleep(0.2)
        first = _state(out / "ref")
        assert first["state"] == "running" and first["attempts"] == 1
        _node_of(ray_cluster, first["node"]).kill_raylet()
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    final = _state(out / "ref")
    assert final["state"] == "finished" and final["attempts"] == 2 and final["node"] != first["node"]
    results = json.loads((out / "ref" / "run" / "results.json").read_text())
    assert results["budget"]["resumed_results"] >= 2  # the first attempt's answers were kept, not recomputed
    assert _metrics(out / "ref" / "run" / "results.json") == _metrics(reference_run)
    # the cluster gets its second slot back for the tests after this one
    dead = next(n for n in ray_cluster.list_all_nodes() if n.node_id == first["node"])
    ray_cluster.remove_node(dead, allow_graceful=False)
    ray_cluster.add_node(num_cpus=1, resources={SLOT: 1})
    ray_cluster.wait_for_nodes()


def test_a_sharded_run_equals_the_unsharded_one(ray_cluster, demo_submission, reference_run, tmp_path):
    sub = _submission(demo_submission, tmp_path / "sub", "ref", batch=2)
    out = tmp_path / "sharded"
    proc = _effbench("run", sub, "--shards", 2, "--address", ray_cluster.address, "--max-eval-instances", 2, "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    split = json.loads((out / "shards.json").read_text())
    assert len(split["shards"]) == 2 and all(s["entries"] for s in split["shards"])
    assert sorted(e for s in split["shards"] for e in s["entries"]) == sorted(
        r["entry"] for r in json.loads(reference_run.read_text())["runs"])
    assert _metrics(out / "results.json") == _metrics(reference_run)
    merged = json.loads((out / "results.json").read_text())
    for r in merged["runs"]:  # each run's HELM folder, inside its shard
        assert (out / r["helm_run_dir"] / "scenario_state.json").is_file()
    from effbench.results import load_results

    load_results(out)  # the merged file is a valid results.json

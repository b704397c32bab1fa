"""The shards' results.json as one (`effbench run --shards`). Each shard ran whole suite entries, so
its run records are those an unsharded run writes; they are put back in suite order and the
totals, suite score and scenario columns are computed from them as `effbench run` computes them.
Throughput is over the slowest shard's execution (the shards ran side by side); peak memory is
the largest shard's; each shard's own results.json (under shards/K/run/) keeps its profile."""

from __future__ import annotations

from pathlib import Path

from effbench.challenge.suites import Suite
from effbench.contracts import EffbenchError
from effbench.results import load_results, write_results
from effbench.score import columns_of, totals

_SUMMED = ("cancelled", "not_started", "worker_restarts", "resumed_results")  # counts; "crashes": lists, joined


def merge_shards(suite: Suite, out: Path, shards: list[tuple[Path, dict]]) -> Path:
    """OUT/results.json from each shard's (folder, state)."""
    parts = []
    for where, state in shards:
        if not state.get("results"):
            raise EffbenchError(f"{where}: shard has no results.json (state {state['state']}: {state.get('reason')})")
        parts.append((where.relative_to(out), load_results(where / state["results"])))
    order = {entry: i for i, (entry, _) in enumerate(suite.entries())}
    runs = []
    for rel, res in parts:
        run_folder = rel / "run"  # the shard's `effbench run` folder, where its paths are relative to
        for r in res["runs"]:
            runs.append({**r, "helm_run_dir": str(run_folder / r["helm_run_dir"]) if r["helm_run_dir"] else None})
    runs.sort(key=lambda r: order[r["entry"]])
    results = [res for _, res in parts]
    execute = max(res["totals"]["execute_seconds"] for res in results)
    peaks = [res["totals"]["peak_memory_bytes"] for res in results if res["totals"]["peak_memory_bytes"] is not None]
    merged_totals = {**totals(runs, execute, None), "peak_memory_bytes": max(peaks) if peaks else None}
    first = results[0]
    budget = {**first["budget"], "deadline_hit": any(r["budget"]["deadline_hit"] for r in results),
              "elapsed_s": max(r["budget"]["elapsed_s"] for r in results),
              "stopped": next((r["budget"]["stopped"] for r in results if r["budget"]["stopped"]), None),
              **{k: sum(r["budget"][k] for r in results) for k in _SUMMED},
              "crashes": [c for r in results for c in r["budget"]["crashes"]],
              "journal": str(parts[0][0] / "run" / first["budget"]["journal"])}
    groups = sorted({r["scenario"] for r in runs})
    merged = {
        **first,
        "suite": {**first["suite"], "scenarios": {g: columns_of(suite, g, runs).model_dump() for g in groups if columns_of(suite, g, runs)}},
        "runs": runs,
        "totals": merged_totals,
        "budget": budget,
        "phases": {p: max(r["phases"].get(p, 0.0) for r in results) for p in first["phases"]},
        "helm_output": str(parts[0][0] / "run" / first["helm_output"]),  # each shard has its own
        "shards": [{"folder": str(rel), "results": str(rel / "run" / "results.json"), "runs": len(res["runs"]),
                    "execute_seconds": res["totals"]["execute_seconds"]}
                   for rel, res in parts],
    }
    return write_results(out, merged)

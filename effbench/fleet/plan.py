"""Plans that run nothing: the slot-hours a fleet needs (`effbench fleet --dry-run`, from `effbench
check` projections), and the split of one suite into shards balanced by predicted cost
(`effbench run --shards N`)."""

from __future__ import annotations

import heapq
import json
from pathlib import Path
from typing import Sequence

from effbench.contracts import EffbenchError, GenerationRequest
from effbench.predict.roofline import CostCoefficients


def lpt(costs: dict[str, float], slots: int) -> list[list[str]]:
    """Longest processing time first: each item, costliest first, to the least loaded slot.
    Within 4/3 of the best makespan; ties broken by name, so a split is reproducible."""
    heap = [(0.0, i) for i in range(slots)]
    bins: list[list[str]] = [[] for _ in range(slots)]
    for name in sorted(costs, key=lambda k: (-costs[k], k)):
        load, i = heapq.heappop(heap)
        bins[i].append(name)
        heapq.heappush(heap, (load + costs[name], i))
    return bins


def makespan(costs: dict[str, float], slots: int) -> float:
    return max((sum(costs[n] for n in b) for b in lpt(costs, slots)), default=0.0)


# ---------------------------------------------------------------- fleet --dry-run


def _projection(checks: Path | None, name: str) -> dict | None:
    """An `effbench check` of this submission: CHECKS/<name>/check.json or CHECKS/<name>.json."""
    if checks is None:
        return None
    from effbench.results import load_check

    for file in (checks / name / "check.json", checks / f"{name}.json"):
        if file.is_file():
            return load_check(file)
    return None


def slot_plan(names: Sequence[str], budget_min: float, slots: int, checks: Path | None, tracks: int = 1) -> dict:
    """Per submission its projected minutes (check's median and 95th percentile, each capped at the
    budget: the deadline stops a task there), or the budget itself where no check was run (the
    bound, not a projection); the fleet's slot-hours, and its wall time on `slots` slots."""
    rows = []
    for name in names:
        check = _projection(checks, name)
        if check is None:
            rows.append({"submission": name, "source": "budget (no check)", "median_min": budget_min,
                         "p95_min": budget_min, "verdict": None})
            continue
        p = check["projected_minutes"]
        rows.append({"submission": name, "source": "check", "median_min": min(p["median"], budget_min),
                     "p95_min": min(p["p95"], budget_min), "verdict": check["verdict"]})
    med = {r["submission"]: r["median_min"] for r in rows}
    p95 = {r["submission"]: r["p95_min"] for r in rows}
    per_sub = sum(p95.values()) / len(rows) / 60 if rows else 0.0
    return {
        "budget_minutes": budget_min, "slots": slots, "tracks": tracks, "submissions": rows,
        "slot_hours": {"median": sum(med.values()) / 60 * tracks, "p95": sum(p95.values()) / 60 * tracks},
        "wall_hours": {"median": makespan(med, slots) / 60 * tracks, "p95": makespan(p95, slots) / 60 * tracks},
        # the same field at scale: what the README's "Many submissions" paragraph is computed from
        "per_100_submissions_x2_tracks_slot_hours": per_sub * 100 * 2,
    }


# ---------------------------------------------------------------- run --shards


def coefficients(submission, check: Path | None, hardware_cache: Path | None = None) -> tuple[CostCoefficients, str]:
    """The cost model's coefficients: those `effbench check` fitted for this submission where its
    check.json is given, else a roofline of this machine (prefill: 2 FLOP per weight per token at
    the measured matmul rate; a decode step: the weights read once at the measured bandwidth)."""
    if check is not None:
        from effbench.results import load_check

        c = load_check(check)["cost_model"]
        return CostCoefficients(c["fixed"], c["prefill_tokens"], c["decode_steps"], c["decoded_tokens"]), f"check {check}"
    from effbench.predict.hardware import measure_here
    from effbench.predict.memfit import fit_submission

    here = measure_here(quick=True, cache_dir=hardware_cache)
    mem = fit_submission(submission, here)
    flops = here.flops_for(submission.manifest.dtype)
    return CostCoefficients(0.0, 2 * mem.params.total / flops, mem.weights_bytes / here.bandwidth_bytes_per_s, 0.0), "roofline"


def entry_costs(requests: Sequence[GenerationRequest], lengths: dict[str, int], entry_of: dict[str, str],
                coef: CostCoefficients, width: int) -> dict[str, float]:
    """Predicted seconds per suite entry: each request's share of a batch of `width` (its fixed
    cost and decode steps shared by the rows), its prompt, and its outputs at max_tokens."""
    costs: dict[str, float] = {}
    for r in requests:
        rows = max(1, r.num_completions)
        t = coef.fixed / width + coef.prefill * lengths[r.id] + (coef.step / width + coef.row) * r.max_tokens * rows
        entry = entry_of[r.origin.run]
        costs[entry] = costs.get(entry, 0.0) + t
    return costs


def shard_split(costs: dict[str, float], shards: int, entries: Sequence[str]) -> list[list[str]]:
    """Entries into at most `shards` non-empty shards, balanced by cost; each shard in suite order.
    An entry with no request (all of it left out) weighs nothing and still goes somewhere, so
    that its not-run record is written by one shard."""
    if shards < 1:
        raise EffbenchError(f"--shards {shards}: must be at least 1")
    order = {e: i for i, e in enumerate(entries)}
    full = {e: costs.get(e, 0.0) for e in entries}
    bins = [sorted(b, key=order.__getitem__) for b in lpt(full, min(shards, len(entries))) if b]
    return bins


def write_split(path: Path, split: list[list[str]], costs: dict[str, float], source: str) -> None:
    from effbench.atomic import write_json_atomic

    write_json_atomic(path, {"coefficients": source, "shards": [
        {"entries": b, "predicted_s": round(sum(costs.get(e, 0.0) for e in b), 3)} for b in split]})


def read_split(path: Path) -> list[list[str]]:
    return [s["entries"] for s in json.loads(path.read_text(encoding="utf-8"))["shards"]]

"""`effbench run SUB --shards N`: one suite split across N slots. The driver plans the suite once
(HELM, the tokenizer), weighs each entry with the cost model (fleet/plan.py), gives each shard a
set of whole entries (longest first), runs each shard as a fleet task (its own model copy, its own
journal) and merges the shards' results.json into one: the same runs, metrics and scores as an
unsharded run, with throughput over the slowest shard's execution."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from effbench.challenge.suites import Suite
from effbench.contracts import EffbenchError
from effbench.fleet.layout import read_state, write_fleet
from effbench.plan import RunOptions

SPLIT_FILE = "shards.json"


def plan_split(sub, suite: Suite, opts: RunOptions, shards: int, check: Path | None, echo) -> list[list[str]]:
    """Plan the whole suite here (no model), weigh its entries, split them."""
    from effbench.challenge.helm_bridge import HelmSession
    from effbench.fleet.plan import coefficients, entry_costs, shard_split, write_split
    from effbench.paths import default_cache_dir
    from effbench.plan import Progress, plan_suite, prompt_shapes

    session = HelmSession(opts.out / "shards" / "plan-helm", suite.name, parallelism=opts.parallelism,
                          instance_cache=(opts.cache_dir or default_cache_dir()) / "helm-instances")
    plan = plan_suite(sub, suite, opts, session, Progress())
    requests, lengths, _ = prompt_shapes(sub, plan.requests(suite.name))
    coef, source = coefficients(sub, check, opts.cache_dir)
    entry_of = {p.name: p.entry for p in plan.plans}
    costs = entry_costs(requests, lengths, entry_of, coef, sub.manifest.limits.max_batch_size)
    known = {e for e, _ in plan.specs} | set(plan.not_run)
    entries = [e for e, _ in suite.entries() if e in known]
    split = shard_split(costs, shards, entries)
    write_split(opts.out / SPLIT_FILE, split, costs, source)
    for k, b in enumerate(split):
        echo(f"shard {k}: {len(b)} entries, predicted {sum(costs.get(e, 0.0) for e in b):.1f} s ({source})")
    return split


def run_sharded(folder: Path, suite_ref: str, opts: RunOptions, shards: int, *, address: str | None, check: Path | None,
                trust: dict, echo: Callable[[str], None]) -> Path:
    """The shards as fleet tasks, then OUT/results.json merged from theirs. Run again on the same
    --out, it keeps the split and the finished shards and resumes the others from their journals."""
    import ray

    from effbench.challenge.suites import load_suite
    from effbench.fleet.driver import Job, connect, submit_all, task_options
    from effbench.fleet.plan import read_split
    from effbench.submission import Submission

    sub = Submission.load(folder, **trust)
    suite = load_suite(suite_ref)
    opts.out.mkdir(parents=True, exist_ok=True)
    split = read_split(opts.out / SPLIT_FILE) if (opts.out / SPLIT_FILE).is_file() else plan_split(sub, suite, opts, shards, check, echo)
    options = task_options(opts)
    jobs = [Job(f"shard-{k}", sub.folder, opts.out / "shards" / str(k), suite_ref, {**options, "entries": entries})
            for k, entries in enumerate(split)]
    write_fleet(opts.out, {"version": 1, "kind": "shards", "suite": suite_ref, "options": options, "address": address,
                           "submissions": {j.name: str(sub.folder) for j in jobs}, "rejected": {}, "started": time.time()})
    todo = [j for j in jobs if read_state(j.where)["state"] not in ("finished", "partial")]
    if todo:
        placement = connect(address, min(shards, len(split)))
        try:
            states = submit_all(todo, placement, trust, echo)
        finally:
            ray.shutdown()
        failed = {n: s for n, s in states.items() if s["state"] == "failed"}
        if failed:
            name, s = next(iter(failed.items()))
            raise EffbenchError(f"{opts.out}: {len(failed)} of {len(jobs)} shards failed, first {name}: {s.get('reason')};"
                                f" run the same command again to resume them")
    from effbench.fleet.merge import merge_shards

    return merge_shards(suite, opts.out, [(j.where, read_state(j.where)) for j in jobs])

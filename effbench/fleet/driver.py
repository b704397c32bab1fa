"""The fleet's driver: check every submission here, then one Ray task per submission (or shard),
each holding one accelerator slot, and the ranking once all have ended.

A slot is `num_gpus=1` on a cluster with GPUs, else the custom resource `effbench_slot` (a CPU
cluster, or tests running several "cards" on one machine). Without --address the driver starts a
one-machine cluster of its own, listening on 127.0.0.1 only (LOOPBACK_ONLY). A task lost with its worker or node
is run again by Ray (max_retries) on another node and resumes from its journal (task.py); an
exception inside a task is not retried (a bad plan fails the same way twice)."""

from __future__ import annotations

import glob
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from effbench.contracts import EffbenchError
from effbench.fleet.layout import ENDED, read_state, submission_dir, write_fleet, write_state
from effbench.fleet.task import evaluate

SLOT = "effbench_slot"
RETRIES = 3  # a task's runs after a lost worker or node, each resuming from the journal


@dataclass
class Submissions:
    accepted: dict[str, Path] = field(default_factory=dict)  # name -> folder
    rejected: dict[str, str] = field(default_factory=dict)  # path as given -> one-line reason


def discover(args: Sequence[str]) -> list[Path]:
    """Submission folders from the command line: folders with an effbench.toml, globs of them,
    or a folder whose subfolders are submissions. Anything else is kept, for validation to say
    what is wrong with it."""
    from effbench.submission import MANIFEST_NAME

    found: list[Path] = []
    for arg in args:
        paths = [Path(p) for p in sorted(glob.glob(arg))] if glob.has_magic(arg) else [Path(arg)]
        if not paths:
            found.append(Path(arg))  # a glob that matched nothing: reported as missing
        for p in paths:
            subs = sorted(c for c in p.iterdir() if (c / MANIFEST_NAME).is_file()) if p.is_dir() and not (p / MANIFEST_NAME).is_file() else []
            found.extend(subs or [p])
    return found


def validate(paths: Sequence[Path], trust: dict) -> Submissions:
    """Each manifest checked here, on the driver, before anything is scheduled: a bad one is left
    out with its one-line reason, the rest run."""
    from effbench.submission import Submission

    subs = Submissions()
    for p in paths:
        try:
            sub = Submission.load(p, **trust)
        except EffbenchError as e:
            subs.rejected[str(p)] = str(e)
            continue
        if sub.name in subs.accepted:
            subs.rejected[str(p)] = (f"{sub.manifest_path}: field 'name': {sub.name!r} is also the name of"
                                     f" {subs.accepted[sub.name]} (names are folders under the fleet's --out)")
            continue
        subs.accepted[sub.name] = sub.folder
    return subs


# Ray reads this when imported: "0" makes a node take 127.0.0.1 as its address and bind its servers
# there (Ray's mode for laptops); otherwise they listen on every interface.
LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# Ray starts its workers at niceness 15 unless this says otherwise: next to any busy process at the
# default priority, an evaluation would then get ~3% of a core (measured: the fleet bench crawled).
WORKER_NICENESS = "RAY_worker_niceness"


def connect(address: str | None, slots: int) -> dict:
    """ray.init, and the resources one task reserves on this cluster. A cluster of this machine
    (none given, or one on 127.0.0.1) is reached, and started, on the loopback interface only."""
    host = (address or "").removeprefix("ray://").rsplit(":", 1)[0]
    if address is None or host in ("127.0.0.1", "localhost"):
        os.environ.setdefault(LOOPBACK_ONLY, "0")
    os.environ.setdefault(WORKER_NICENESS, "0")  # read by a raylet this driver starts (task.py says why)
    import ray

    if address is None:
        ray.init(num_cpus=os.cpu_count(), resources={SLOT: slots}, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    else:
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise EffbenchError(f"--address {address}: no Ray cluster there ({type(e).__name__}: {e})".splitlines()[0]) from None
    have = ray.cluster_resources()
    if have.get("GPU", 0) >= 1:
        return {"num_gpus": 1, "num_cpus": 0}
    if have.get(SLOT, 0) >= 1:
        return {"resources": {SLOT: 1}, "num_cpus": 0}
    ray.shutdown()
    raise EffbenchError(f"--address {address}: the cluster has no GPU and no '{SLOT}' resource; start each node with"
                        f" `ray start ... --resources '{{\"{SLOT}\": 1}}'` (one per card it stands for)")


def _on_node(*args):
    """The Ray task: task.evaluate with the node it runs on (for `fleet status`)."""
    import ray

    return evaluate(*args, node=ray.get_runtime_context().get_node_id())


@dataclass
class Job:
    name: str
    folder: Path  # the submission
    where: Path  # its folder under the fleet's --out (state.json, run/)
    suite: str
    options: dict  # RunOptions.to_json() without `out`


def task_options(opts) -> dict:
    """A RunOptions for a task, as JSON: every path absolute (tasks run in other folders, on other
    nodes), without `out` (each task's own) and `resume` (a task decides from its folder)."""
    return {k: (str(Path(v).resolve()) if isinstance(v, Path) else v) for k, v in opts.__dict__.items()
            if k not in ("out", "resume")}


def submit_all(jobs: Sequence[Job], placement: dict, trust: dict, echo: Callable[[str], None]) -> dict[str, dict]:
    """Every job as a Ray task; waits for all, writing `failed` for any that Ray gave up on.
    Returns name -> final state."""
    import ray

    task = ray.remote(_on_node).options(max_retries=RETRIES, retry_exceptions=False, **placement)
    pending = {}
    for j in jobs:
        write_state(j.where, "queued", queued=time.time())
        pending[task.remote(str(j.folder), j.suite, str(j.where), j.options, trust)] = j
    states = {}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        j = pending.pop(done[0])
        try:
            states[j.name] = ray.get(done[0])
        except ray.exceptions.RayError as e:  # raised in the task (recorded there too), or retries used up
            first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
            states[j.name] = write_state(j.where, "failed", reason=f"{type(e).__name__}: {first}"[:500])
        s = states[j.name]
        echo(f"{j.name}: {s['state']}" + (f" ({s['reason']})" if s.get("reason") else "")
             + (f", {s['attempts']} attempts" if s.get("attempts", 1) > 1 else ""))
    return states


def pending_jobs(out: Path, subs: Submissions, suite: str, options: dict) -> tuple[list[Job], list[str]]:
    """Jobs for the submissions without a final result in OUT (a fleet run again on its own --out
    goes on where it stopped: failed or unfinished ones resume from their journals); and the names
    already done."""
    jobs, done = [], []
    for name, folder in subs.accepted.items():
        where = submission_dir(out, name)
        if read_state(where)["state"] in ("finished", "partial"):
            done.append(name)
        else:
            jobs.append(Job(name, folder, where, suite, options))
    return jobs, done


def run_fleet(args: Sequence[str], suite: str, out: Path, options: dict, trust: dict, *, address: str | None,
              slots: int, echo: Callable[[str], None]) -> tuple[Submissions, dict[str, dict]]:
    subs = validate(discover(args), trust)
    for path, why in subs.rejected.items():
        echo(f"left out: {why}")
    if not subs.accepted:
        raise EffbenchError("fleet: no submission passed validation; nothing to run")
    write_fleet(out, {"version": 1, "suite": suite, "options": options, "address": address,
                      "submissions": {n: str(f) for n, f in subs.accepted.items()}, "rejected": subs.rejected,
                      "started": time.time()})
    jobs, done = pending_jobs(out, subs, suite, options)
    for name in done:
        echo(f"{name}: already {read_state(submission_dir(out, name))['state']} in {out} (kept)")
    states = {n: read_state(submission_dir(out, n)) for n in done}
    if jobs:
        import ray

        placement = connect(address, slots)
        try:
            states.update(submit_all(jobs, placement, trust, echo))
        finally:
            ray.shutdown()
    return subs, states


def finished_results(out: Path, names: Sequence[str]) -> list[Path]:
    """results.json of every submission that has one (finished or partial), for the ranking."""
    paths = []
    for n in names:
        s = read_state(submission_dir(out, n))
        if s["state"] in ENDED and s.get("results"):
            paths.append(submission_dir(out, n) / s["results"])
    return paths

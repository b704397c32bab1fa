"""FLEET_OUT, the folder every node reads and writes (shared storage on a real cluster):

    fleet.json              what the driver planned: suite, options, submissions, the ones left out
    <name>/state.json       queued / running / finished / partial / failed, with the reason and attempts
    <name>/run/             `effbench run`'s output folder: run_config.json, journal.jsonl, results.json
    ranking.json, ranking.md    the fleet's ranking (`effbench rank`), once every task has ended

A state file is written whole (effbench/atomic.py) by whoever owns the state at the time: the driver
(queued, and failed when Ray gives a task up), the task (running, finished, partial, failed).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from effbench.atomic import write_json_atomic
from effbench.contracts import EffbenchError
from effbench.execute.journal import JOURNAL_NAME
from effbench.paths import safe_name

FLEET_FILE = "fleet.json"
STATE_FILE = "state.json"
RUN_FOLDER = "run"
State = Literal["queued", "running", "finished", "partial", "failed"]
ENDED = ("finished", "partial", "failed")


def submission_dir(out: Path, name: str) -> Path:
    return out / safe_name(name)


def run_dir(out: Path, name: str) -> Path:
    return submission_dir(out, name) / RUN_FOLDER


def write_fleet(out: Path, fleet: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / FLEET_FILE, fleet)


def read_fleet(out: Path) -> dict:
    from effbench.results import read_json_file

    fleet = read_json_file(out / FLEET_FILE, "no fleet here (FLEET_OUT is the --out of `effbench fleet`)")
    if not isinstance(fleet, dict) or not isinstance(fleet.get("submissions"), dict):
        raise EffbenchError(f"{out / FLEET_FILE}: field 'submissions': missing (not written by `effbench fleet`)")
    return fleet


def read_state(folder: Path) -> dict:
    """A submission's state; a folder without one is `queued` (its task has not written yet)."""
    from effbench.results import read_json_file

    if not (folder / STATE_FILE).is_file():
        return {"state": "queued", "attempts": 0}
    return read_json_file(folder / STATE_FILE, "missing")


def write_state(folder: Path, state: State, **fields) -> dict:
    """The state file with `state` and `fields` changed, the rest kept (attempts, the node, the
    start time)."""
    folder.mkdir(parents=True, exist_ok=True)
    current = read_state(folder) if (folder / STATE_FILE).is_file() else {"attempts": 0}
    current.update(fields, state=state, updated=time.time())
    if state in ENDED and not current.get("ended"):
        current["ended"] = time.time()
    write_json_atomic(folder / STATE_FILE, current)
    return current


def journal_of(out: Path, name: str) -> Path:
    return run_dir(out, name) / JOURNAL_NAME

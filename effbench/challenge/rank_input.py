"""What `effbench rank` reads: results.json files as on disk, and in each the fields the ranking
uses, checked one by one (effbench/challenge/rank.py scores them).

Only those fields are checked, not the full schema, so any version of the file, or another
writer's, ranks. Errors a user can fix are EffbenchError, one line naming the file and the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from effbench.contracts import EffbenchError


@dataclass(frozen=True)
class Run:
    scenario: str
    finished: bool
    metrics: dict[str, float | None]


@dataclass(frozen=True)
class Entry:
    """One results.json: one submission, one suite, one track."""

    source: str
    track: str
    submission: str
    suite: str
    weight: float
    scenarios: dict[str, tuple[list[str], set[str]]]  # scenario -> (metrics, lower_is_better)
    runs: list[Run]


def _get(d: Mapping, key: str, kind: type | tuple[type, ...], source: str, where: str) -> Any:
    field = f"{where}.{key}" if where else key
    if key not in d:
        raise EffbenchError(f"{source}: missing field {field}")
    v = d[key]
    if not isinstance(v, kind) or isinstance(v, bool):
        raise EffbenchError(f"{source}: field {field} has the wrong type ({type(v).__name__})")
    return v


def _str_list(v: Any, source: str, field: str) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise EffbenchError(f"{source}: field {field} must be a list of metric names")
    return v


def parse_entry(data: Any, source: str) -> Entry:
    """One parsed results.json dict, its fields checked; `source` names it in error messages."""
    if not isinstance(data, dict):
        raise EffbenchError(f"{source}: expected a JSON object at the top level")
    track = _get(data, "track", str, source, "")
    name = _get(_get(data, "submission", dict, source, ""), "name", str, source, "submission")
    suite = _get(data, "suite", dict, source, "")
    suite_name = _get(suite, "name", str, source, "suite")
    weight = float(_get(suite, "weight", (int, float), source, "suite"))
    if not math.isfinite(weight) or weight < 0:
        raise EffbenchError(f"{source}: field suite.weight must be a finite number >= 0, got {weight}")
    scenarios = {}
    for sc, spec in _get(suite, "scenarios", dict, source, "suite").items():
        where = f"suite.scenarios.{sc}"
        if not isinstance(spec, dict):
            raise EffbenchError(f"{source}: field {where} must be an object with metrics and lower_is_better")
        metrics = _str_list(_get(spec, "metrics", list, source, where), source, f"{where}.metrics")
        if not metrics:
            raise EffbenchError(f"{source}: field {where}.metrics is empty (a scenario needs at least one metric)")
        lower = _str_list(spec.get("lower_is_better", []), source, f"{where}.lower_is_better")
        if unknown := sorted(set(lower) - set(metrics)):
            raise EffbenchError(f"{source}: field {where}.lower_is_better names {unknown[0]!r}, which is not in its metrics")
        scenarios[sc] = (metrics, set(lower))
    runs = []
    for i, run in enumerate(_get(data, "runs", list, source, "")):
        where = f"runs[{i}]"
        if not isinstance(run, dict):
            raise EffbenchError(f"{source}: field {where} must be an object")
        # A scenario suite.scenarios leaves out (effbench run omits one it found no metric for)
        # adds no column from this file, but its runs still count where the field has columns.
        scenario = _get(run, "scenario", str, source, where)
        finished = _get(run, "status", str, source, where) == "finished"
        # A run that did not finish counts as missing whatever it holds; one that did must say.
        metrics = _get(run, "metrics", dict, source, where) if finished else {}
        for m, v in metrics.items():
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise EffbenchError(f"{source}: field {where}.metrics.{m} must be a number or null")
        runs.append(Run(scenario, finished, metrics))
    return Entry(source, track, name, suite_name, weight, scenarios, runs)


def read_all(paths: Sequence[Path]) -> tuple[list[Any], list[str]]:
    """Each results.json (a file, or a folder holding results.json) as on disk, read by
    effbench/results.py: (parsed dicts, sources). Not checked against the full schema: rank checks
    the fields it uses (parse_entry), so any version of the file, or another writer's, ranks."""
    from effbench.results import read_results, results_file

    return [read_results(p) for p in map(Path, paths)], [str(results_file(p)) for p in map(Path, paths)]

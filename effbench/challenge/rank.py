"""Challenge scoring and ranking: the NeurIPS 2023 LLM Efficiency Challenge's rule, per track.

Source: /work/shared/docs/CHALLENGE.md, "Scoring" (report: arXiv 2503.13507). For each
(scenario, metric) column, a submission's win rate against the field of its track; the mean per
scenario; the geometric mean per suite; the weighted sum over suites (open 1/3, closed 2/3).
Then Spearman between open and closed scores, the report's main finding (winners overfit open).

`rank_results` is the pure computation on parsed results.json dicts; `read_all` reads files,
`print_ranking` and `write_json` present. Errors a user can fix are EffbenchError, one line.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from effbench.atomic import write_json_atomic
from effbench.contracts import EffbenchError

# What a missing metric counts as (a run not finished, a null value, no run at all).
MISSING = 0.0
MISSING_LOWER_IS_BETTER = 1000.0
# An exact 0 inside a geometric mean would erase the other factors; the challenge floors it.
TINY = sys.float_info.min
# Final scores this close (relative) share a rank: sums of the same terms in another order.
RANK_REL_TOL = 1e-12


# ---------------------------------------------------------------- the arithmetic, on numbers


def win_rates(values: Sequence[float], lower_is_better: bool = False) -> list[float]:
    """Per submission: (number strictly worse + 1/number tied) / number of submissions.

    Our reading of the challenge's rule: "tied" counts the submissions with exactly the same
    value INCLUDING the submission itself, so a unique value adds 1/1 and the worst unique value
    still gets 1/n (never 0); k submissions tied at the bottom each get (1/k)/n. "Worse" is lower,
    or higher when lower is better; values compare exactly. HELM's helm-summarize mean win rate
    differs: (worse + (tied - 1) / 2) / (n - 1), a tie is half a win, and it skips null values
    where the challenge counts them as 0 (1000 when lower is better).
    """
    n = len(values)
    counts = Counter(values)
    out = []
    for v in values:
        worse = sum(1 for w in values if (w > v if lower_is_better else w < v))
        out.append((worse + 1 / counts[v]) / n)
    return out


def geometric_mean(values: Sequence[float]) -> float:
    """Geometric mean with an exact 0 replaced by the smallest positive normal float, so one
    zero dominates (the score becomes tiny) but still ranks submissions that have one. Done in
    logs: a product of several tiny factors would underflow to 0."""
    if not values:
        raise ValueError("geometric mean of nothing")
    return math.exp(math.fsum(math.log(v if v > 0 else TINY) for v in values) / len(values))


def competition_ranks(scores: Sequence[float]) -> list[int]:
    """Rank 1 = highest; ties share the best rank and the next rank skips (1, 1, 3)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    ranks = [0] * len(scores)
    for pos, i in enumerate(order):
        prev = order[pos - 1] if pos else None
        tied = prev is not None and math.isclose(scores[i], scores[prev], rel_tol=RANK_REL_TOL, abs_tol=0.0)
        ranks[i] = ranks[prev] if tied else pos + 1
    return ranks


def _mean(values: Sequence[float]) -> float:
    # fsum: the same values in another run order give the same float, so ties stay exact.
    return math.fsum(values) / len(values)


# ---------------------------------------------------------------- results.json, validated


@dataclass(frozen=True)
class _Run:
    scenario: str
    finished: bool
    metrics: dict[str, float | None]


@dataclass(frozen=True)
class _Entry:
    """One results.json: one submission, one suite, one track."""

    source: str
    track: str
    submission: str
    suite: str
    weight: float
    scenarios: dict[str, tuple[list[str], set[str]]]  # scenario -> (metrics, lower_is_better)
    runs: list[_Run]


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


def _parse(data: Any, source: str) -> _Entry:
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
        runs.append(_Run(scenario, finished, metrics))
    return _Entry(source, track, name, suite_name, weight, scenarios, runs)


def _value(entry: _Entry | None, scenario: str, metric: str, lower_is_better: bool) -> float:
    """Mean over the submission's runs of this scenario; a run not finished, or a null, missing
    or NaN value counts as 0 (1000 when lower is better); no run at all counts the same."""
    missing = MISSING_LOWER_IS_BETTER if lower_is_better else MISSING
    runs = [r for r in entry.runs if r.scenario == scenario] if entry else []
    if not runs:
        return missing
    vals = []
    for r in runs:
        v = r.metrics.get(metric) if r.finished else None
        vals.append(missing if v is None or math.isnan(v) else float(v))
    return _mean(vals)


# ---------------------------------------------------------------- the ranking


@dataclass(frozen=True)
class MetricScore:
    value: float
    win_rate: float
    lower_is_better: bool


@dataclass(frozen=True)
class ScenarioScore:
    value: float  # mean of its metrics' win rates
    metrics: dict[str, MetricScore]


@dataclass(frozen=True)
class SuiteScore:
    weight: float
    score: float  # geometric mean of the scenario values
    source: str | None  # the results file; None: no results for this suite (all metrics missing)
    scenarios: dict[str, ScenarioScore]


@dataclass(frozen=True)
class SubmissionScore:
    name: str
    rank: int
    final: float  # sum over suites of weight x score
    suites: dict[str, SuiteScore]


@dataclass(frozen=True)
class Correlation:
    """Spearman rank correlation of the open-suite and closed-suite scores; rho None: see reason."""

    rho: float | None
    pvalue: float | None
    open_suite: str | None
    closed_suite: str | None
    n: int
    reason: str | None = None


@dataclass(frozen=True)
class TrackRanking:
    track: str
    suites: dict[str, float]  # name -> weight, in display order
    submissions: list[SubmissionScore]  # best first
    spearman: Correlation


@dataclass(frozen=True)
class Ranking:
    tracks: list[TrackRanking]

    def to_json(self) -> dict:
        return asdict(self)


def rank_results(results: Sequence[Any], sources: Sequence[str] | None = None) -> Ranking:
    """Score and rank parsed results.json dicts, each track on its own. `sources` names each dict
    in error messages (default results[i])."""
    sources = list(sources) if sources is not None else [f"results[{i}]" for i in range(len(results))]
    if len(sources) != len(results):
        raise ValueError("one source per result")
    if not results:
        raise EffbenchError("no results to rank: give at least one results.json")
    entries = [_parse(d, s) for d, s in zip(results, sources)]
    seen: dict[tuple[str, str, str], _Entry] = {}
    for e in entries:
        key = (e.track, e.submission, e.suite)
        if key in seen:
            raise EffbenchError(f"{seen[key].source} and {e.source}: both hold track {e.track!r}, submission {e.submission!r}, suite {e.suite!r}")
        seen[key] = e
    tracks = sorted({e.track for e in entries})
    return Ranking([_rank_track(t, [e for e in entries if e.track == t]) for t in tracks])


def _rank_track(track: str, entries: list[_Entry]) -> TrackRanking:
    names = sorted({e.submission for e in entries})
    by_key = {(e.submission, e.suite): e for e in entries}
    weights: dict[str, tuple[float, str]] = {}
    # (suite, scenario) -> metric -> (lower_is_better, source that said so): the union of the field.
    columns: dict[tuple[str, str], dict[str, tuple[bool, str]]] = {}
    for e in entries:
        if e.suite in weights and not math.isclose(weights[e.suite][0], e.weight, rel_tol=1e-6):
            raise EffbenchError(f"{weights[e.suite][1]} and {e.source}: field suite.weight differs for suite {e.suite!r} ({weights[e.suite][0]:g} vs {e.weight:g})")
        weights.setdefault(e.suite, (e.weight, e.source))
        for sc, (metrics, lower) in e.scenarios.items():
            cols = columns.setdefault((e.suite, sc), {})
            for m in metrics:
                if m in cols and cols[m][0] != (m in lower):
                    raise EffbenchError(f"{cols[m][1]} and {e.source}: field suite.scenarios.{sc}.lower_is_better disagrees on {m!r}")
                cols.setdefault(m, (m in lower, e.source))
    suites = sorted(weights, key=lambda s: (weights[s][0], s))

    per_sub: dict[str, dict[str, SuiteScore]] = {n: {} for n in names}
    for suite in suites:
        scen: dict[str, dict[str, ScenarioScore]] = {n: {} for n in names}
        for sc in sorted(s for (su, s) in columns if su == suite):
            per_metric: dict[str, dict[str, MetricScore]] = {n: {} for n in names}
            for m, (lower, _) in sorted(columns[(suite, sc)].items()):
                vals = [_value(by_key.get((n, suite)), sc, m, lower) for n in names]
                for n, v, w in zip(names, vals, win_rates(vals, lower)):
                    per_metric[n][m] = MetricScore(v, w, lower)
            for n in names:
                scen[n][sc] = ScenarioScore(_mean([ms.win_rate for ms in per_metric[n].values()]), per_metric[n])
        for n in names:
            entry = by_key.get((n, suite))
            score = geometric_mean([s.value for s in scen[n].values()])
            per_sub[n][suite] = SuiteScore(weights[suite][0], score, entry.source if entry else None, scen[n])

    finals = [math.fsum(s.weight * s.score for s in per_sub[n].values()) for n in names]
    ranks = competition_ranks(finals)
    subs = [SubmissionScore(n, r, f, per_sub[n]) for n, r, f in zip(names, ranks, finals)]
    subs.sort(key=lambda s: (s.rank, s.name))
    return TrackRanking(track, {s: weights[s][0] for s in suites}, subs, _spearman(suites, weights, subs))


def _open_closed(suites: list[str], weights: dict[str, tuple[float, str]]) -> tuple[str, str] | None:
    """By name ("open" / "closed" in it), else by weight: the lower weight is the open suite."""
    a, b = suites
    for o, c in ((a, b), (b, a)):
        if "open" in o.lower() and "closed" not in o.lower() and "closed" in c.lower() and "open" not in c.lower():
            return o, c
    if weights[a][0] != weights[b][0]:
        return (a, b) if weights[a][0] < weights[b][0] else (b, a)
    return None


def _spearman(suites: list[str], weights: dict[str, tuple[float, str]], subs: list[SubmissionScore]) -> Correlation:
    n = len(subs)
    if len(suites) != 2:
        return Correlation(None, None, None, None, n, f"needs exactly two suites, this track has {len(suites)}")
    pair = _open_closed(suites, weights)
    if pair is None:
        return Correlation(None, None, None, None, n, "cannot tell open from closed: no 'open'/'closed' in the names and equal weights")
    o, c = pair
    if n < 3:
        return Correlation(None, None, o, c, n, f"needs at least 3 submissions, this track has {n}")
    from scipy.stats import spearmanr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: we report why instead
        res = spearmanr([s.suites[o].score for s in subs], [s.suites[c].score for s in subs])
    rho, p = float(res.statistic), float(res.pvalue)
    if math.isnan(rho):
        return Correlation(None, None, o, c, n, "undefined: every submission has the same score in one suite")
    return Correlation(rho, p, o, c, n)


# ---------------------------------------------------------------- files and presentation


def read_all(paths: Sequence[Path]) -> tuple[list[Any], list[str]]:
    """Each results.json (a file, or a folder holding results.json) as on disk, read by
    effbench/results.py: (parsed dicts, sources). Not checked against the full schema: rank checks
    the fields it uses (_parse), so any version of the file, or another writer's, ranks."""
    from effbench.results import read_results, results_file

    return [read_results(p) for p in map(Path, paths)], [str(results_file(p)) for p in map(Path, paths)]


def rank_files(paths: Sequence[Path]) -> Ranking:
    datas, sources = read_all(paths)
    return rank_results(datas, sources)


def write_json(ranking: Ranking, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, ranking.to_json())
    except OSError as e:
        raise EffbenchError(f"{path}: cannot write the ranking ({e.strerror or e})") from None


def _fmt(x: float) -> str:
    return f"{x:.4f}" if x == 0 or abs(x) >= 1e-4 else f"{x:.2e}"


def print_ranking(ranking: Ranking, console) -> None:
    """One rich table per track, then the open/closed Spearman correlation."""
    from rich.markup import escape
    from rich.table import Table

    for t in ranking.tracks:
        table = Table(title=f"track {escape(t.track)}", title_justify="left")
        table.add_column("rank", justify="right")
        table.add_column("submission")
        for s, w in t.suites.items():
            table.add_column(f"{escape(s)} (x{w:.3g})", justify="right")
        table.add_column("final", justify="right", style="bold")
        for sub in t.submissions:
            cells = [_fmt(sc.score) + ("" if sc.source else " (no results)") for sc in sub.suites.values()]
            table.add_row(str(sub.rank), escape(sub.name), *cells, _fmt(sub.final))
        console.print(table)
        c = t.spearman
        if c.rho is None:
            console.print(f"Spearman open vs closed: n/a ({escape(c.reason or '')})")
        else:
            console.print(f"Spearman open ({escape(c.open_suite)}) vs closed ({escape(c.closed_suite)}), "
                          f"{c.n} submissions: rho = {c.rho:+.3f} (p = {c.pvalue:.3g})")

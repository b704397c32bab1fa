"""Challenge scoring and ranking: the NeurIPS 2023 LLM Efficiency Challenge's rule, per track
(README, "Ranking and contamination"). For each (scenario, metric) column, a submission's win
rate against the field of its track; the mean per scenario; the geometric mean per suite; the
weighted sum over suites (open 1/3, closed 2/3). Then Spearman between open and closed scores,
the challenge's main finding (winners overfit open).

`rank_results` is the pure computation on parsed results.json dicts, whose fields
effbench/challenge/rank_input.py checks; effbench/challenge/rank_output.py reads the files and
presents the ranking. Errors a user can fix are EffbenchError, one line.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from effbench.challenge.rank_input import Entry, parse_entry
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


def _value(entry: Entry | None, scenario: str, metric: str, lower_is_better: bool) -> float:
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
    entries = [parse_entry(d, s) for d, s in zip(results, sources)]
    seen: dict[tuple[str, str, str], Entry] = {}
    for e in entries:
        key = (e.track, e.submission, e.suite)
        if key in seen:
            raise EffbenchError(f"{seen[key].source} and {e.source}: both hold track {e.track!r}, submission {e.submission!r}, suite {e.suite!r}")
        seen[key] = e
    tracks = sorted({e.track for e in entries})
    return Ranking([_rank_track(t, [e for e in entries if e.track == t]) for t in tracks])


def _rank_track(track: str, entries: list[Entry]) -> TrackRanking:
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

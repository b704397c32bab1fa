"""The cost model behind `effbench check`: fit batch times on a short probe, project the whole suite.

Every request of a suite is known before the first runs, with its prompt tokens counted by the
submission's tokenizer; only output lengths are unknown. A probe (a stratified sample: a share of
every run) runs through the scheduler's real batching. Each probe batch gives one observation

    seconds = fixed + a * prefill_tokens + b * decode_steps + c * decoded_tokens

(prefill_tokens: the tokens the backend computes before the first token: on a shared prefix, the
rows' suffixes unpadded (packed into one sequence by the HF backend, unpadded in vLLM) plus the
prefix where this batch computed it; without one, rows x the longest prompt, padding included;
decode_steps: forward passes after the prefill, the longest output in the batch; decoded_tokens:
all rows' outputs), fitted by non-negative least squares. A prompt's cost is its uncached tokens: the
projection replays the scheduler's prefix groups through a cache of the backend's bound in bytes
(effbench/execute/prefix.py's PrefixCache, as the HF backend keeps it). The projection lays out
the full suite with the scheduler's own
batching and draws each request's output length from its run's probe outputs (bounded by
max_tokens), many times, refitting on resampled probe batches each time: the spread of those
totals is the interval.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

import numpy as np

from effbench.contracts import GenerationRequest, GenerationResult
from effbench.execute.order import plan_batches
from effbench.execute.prefix import PrefixCache, PrefixGroup

FEATURES = ("fixed", "prefill_tokens", "decode_steps", "decoded_tokens")
# decode steps of the calibration batches: a short one times a step at the full width, a long one
# (a decode of the run's length) weighs in the fit as much as the probe's long batches do
CALIBRATION_STEPS = (32, 256)
CALIBRATION_SUFFIX = "#calibrate"


def stratified_probe(requests: Sequence[GenerationRequest], fraction: float, seed: int = 0) -> list[GenerationRequest]:
    """A share of every run (at least one request each), drawn at random within the run."""
    by_run: dict[str, list[GenerationRequest]] = {}
    for r in requests:
        by_run.setdefault(r.origin.run, []).append(r)
    rng = random.Random(seed)
    probe = []
    for run, reqs in by_run.items():
        k = min(len(reqs), max(1, round(fraction * len(reqs))))
        probe += rng.sample(reqs, k)
    return probe


def generated_tokens(res: GenerationResult) -> int:
    """Tokens the backend decoded for a request (before stop-sequence cutting): its compute."""
    return max(res.computed_tokens - (res.prompt_tokens - res.cached_tokens), res.output_tokens, 0)


def prefill_tokens(prompts: Sequence[int], cached: Sequence[int]) -> int:
    """One batch's prefill work. On a shared prefix: the rows' suffixes, unpadded (the HF backend
    packs them into one sequence, hf_prefill.py; vLLM pads nothing), plus the prefix where a row of
    this batch computed it for the others (its cached count is lower). Without one: rows x the
    longest prompt, padding included. Counting the padding on a prefix made check under-predict
    the suite-scale MMLU case by 7-14 points more, loaded: a probe's batches (a few requests drawn
    at random per run) carried ~3x their suffix tokens in padding, the run's (sorted by length)
    ~1.1x, at the same seconds per batch (README, "Will it finish?")."""
    shared = max(cached)
    carried = sum(shared - c for c in cached)
    if shared > 0:
        return sum(p - shared for p in prompts) + carried
    return len(prompts) * max(prompts) + carried


def batch_observations(results: Sequence[GenerationResult]) -> tuple[np.ndarray, np.ndarray]:
    """(features [n_batches, 4], [n_batches, 2] prefill and decode seconds) from results, grouped
    by batch. The prefill part runs to the batch's first token, the decode part from there on.
    A request of n completions is n rows decoding its tokens between them (its steps: the
    longest row, taken as their mean: exact for identical greedy rows, the calibration batches).
    Fanned-out duplicates (computed_tokens 0) and errors are left out: they cost no compute."""
    batches: dict[int, list[GenerationResult]] = {}
    for r in results:
        if r.ok and r.computed_tokens > 0 and r.timings.latency is not None:
            batches.setdefault(r.batch_id, []).append(r)
    X, y = [], []
    for members in batches.values():
        gen = [generated_tokens(m) for m in members]
        steps = [-(-g // max(1, len(m.completions))) for g, m in zip(gen, members)]
        t = members[0].timings
        first = t.first_token if t.first_token is not None else t.finished
        pre = prefill_tokens([m.prompt_tokens for m in members], [m.cached_tokens for m in members])
        X.append([1.0, pre, max(steps), sum(gen)])
        y.append([first - t.started, t.finished - first])
    return np.asarray(X, dtype=float).reshape(-1, len(FEATURES)), np.asarray(y, dtype=float).reshape(-1, 2)


def _nnls(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    from scipy.optimize import nnls

    scale = np.maximum(np.abs(X).max(axis=0), 1e-12)  # token counts and the constant weigh alike
    coef, _ = nnls(X / scale, y)
    return coef / scale


def calibration_requests(probe: Sequence[GenerationRequest], lengths: dict[str, int], max_batch_size: int,
                         steps: Sequence[int] = CALIBRATION_STEPS) -> list[GenerationRequest]:
    """Requests that decode at the full batch width, one batch each: the probe's longest generation
    prompt as max_batch_size greedy completions (identical rows, the cost of any rows of that
    shape), no stop sequence, once per length in `steps` (bounded by its max_tokens; one batch
    where that bound makes them alike). A probe's batches hold a few requests of each run, all about
    one width, which cannot tell a decode step's cost (the weights, read once per step) from its
    rows' (more at a wider batch); the full run's batches are max_batch_size wide. The fit weighs a
    batch by its seconds: a short calibration alone (0.1 s on the demo) was outweighed by the
    probe's 1-2 s batches of one or two rows, which ran a step 15-25% cheaper than the run's 8-row
    batches (the generation case: check 17-20% under in every quiet round; with the long one, its
    fit on the run's own batches erred -18/-1/-20% where the short one alone gave -43/-27/-35%,
    README "Will it finish?"). Empty when nothing decodes past its first token, or batches are one
    row wide anyway."""
    gen = [q for q in probe if q.max_tokens > 1 and not q.echo_prompt]
    if max_batch_size < 2 or not gen:
        return []
    q = max(gen, key=lambda q: lengths[q.id])
    bounded = sorted({min(q.max_tokens, s) for s in steps})
    return [replace(q, id=f"{q.id}{CALIBRATION_SUFFIX}{n}", num_completions=max_batch_size, temperature=0.0, top_p=1.0,
                    seed=None, max_tokens=n, stop_sequences=()) for n in bounded]


def fit(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least squares (no term may make a batch cheaper), in two parts that each need
    only two batches of different shapes: prefill seconds ~ fixed + a * prefill_tokens, decode
    seconds ~ b * decode_steps + c * decoded_tokens. Returns [fixed, a, b, c]."""
    pre = _nnls(X[:, :2], y[:, 0])
    dec = _nnls(X[:, 2:], y[:, 1])
    return np.concatenate([pre, dec])


@dataclass
class Projection:
    total_s: np.ndarray  # [samples] total execute seconds
    run_finish_s: dict[str, np.ndarray]  # run -> [samples] seconds when its last request lands
    batch_ends_s: np.ndarray  # [samples, batches] cumulative
    batches: list[list[GenerationRequest]]
    coef: np.ndarray  # the point fit
    answers: list[list[str]] = field(default_factory=list)  # per batch: the run of each request it answers

    def quantiles(self, q: Sequence[float] = (0.05, 0.5, 0.95)) -> list[float]:
        return [float(np.quantile(self.total_s, x)) for x in q]


def project(
    requests: Sequence[GenerationRequest],
    lengths: dict[str, int],
    probe_results: Sequence[GenerationResult],
    max_batch_size: int,
    order: str = "effbench",
    samples: int = 300,
    seed: int = 0,
    coef_transform=None,
    groups: dict[str, PrefixGroup] | None = None,
    prefix_cache_bytes: int | None = None,
    kv_bytes_per_token: int = 1,
    gap: Gap | float = 0.0,
    calibration: Sequence[GenerationResult] = (),
) -> Projection:
    """Project the execute time of `requests` (the whole suite) from the probe's results.
    `coef_transform` maps fitted coefficients to another machine (roofline translation);
    `groups`, `prefix_cache_bytes` (None: the backend shares no prefix; 0: only within a batch)
    and `kv_bytes_per_token` say which prompt tokens the backend will serve from its prefix cache;
    `gap` is the time from one batch's end to the next one's start (between_batches; a float:
    seconds, the same after every batch);
    `calibration`: the calibration batches' results (calibration_requests), in every fit, never
    resampled or held out: the only batches at the full width."""
    X, y = batch_observations(probe_results)
    if len(y) == 0:
        raise ValueError("the probe produced no timed batch")
    Xc, yc = batch_observations(calibration)

    def fit_on(idx) -> np.ndarray:
        return fit(np.vstack([X[idx], Xc]), np.vstack([y[idx], yc]))

    point = fit_on(np.arange(len(y)))
    rng = np.random.default_rng(seed)

    # Output lengths observed per run (what each request decoded), bounded by max_tokens.
    by_id = {r.request_id: r for r in probe_results}
    observed: dict[str, list[int]] = {}
    for q in requests:
        if q.id in by_id and by_id[q.id].ok:
            observed.setdefault(q.origin.run, []).append(generated_tokens(by_id[q.id]))

    batches, dupes = plan_batches(requests, lengths, max_batch_size, order, groups)
    flat = [q for b in batches for q in b]
    starts = np.cumsum([0] + [len(b) for b in batches[:-1]])
    prefill = np.array(expected_prefill(batches, lengths, groups or {}, prefix_cache_bytes, kv_bytes_per_token), dtype=float)
    rows_per_req = np.array([q.num_completions for q in flat], dtype=float)

    # Draw output lengths: [samples, requests]
    draws = np.empty((samples, len(flat)))
    for j, q in enumerate(flat):
        pool = observed.get(q.origin.run)
        if pool:
            draws[:, j] = np.minimum(rng.choice(pool, size=samples), q.max_tokens)
        else:  # a run the probe did not reach: assume it decodes to max_tokens (pessimistic)
            draws[:, j] = q.max_tokens
    steps = np.maximum.reduceat(draws, starts, axis=1)  # [samples, batches]
    decoded = np.add.reduceat(draws * rows_per_req, starts, axis=1)

    # Coefficients: the point fit first, then fits on resampled probe batches.
    coefs = np.empty((samples, len(FEATURES)))
    coefs[0] = point
    for s in range(1, samples):
        coefs[s] = fit_on(rng.integers(0, len(y), len(y)))
    if coef_transform is not None:
        coefs = np.apply_along_axis(coef_transform, 1, coefs)
        point = coef_transform(point)
    per_batch = (coefs[:, [0]] + coefs[:, [1]] * prefill[None, :]
                 + coefs[:, [2]] * steps + coefs[:, [3]] * decoded)  # [samples, batches]
    # what the model misses on batches it was not fitted on, as a factor on the whole (sample 0: none),
    # and the scheduler's time between batches (IPC, the journal), which no batch's own clock sees
    gap = gap if isinstance(gap, Gap) else Gap(float(gap))
    per_batch = per_batch * holdout_factors(X, y, rng, samples, fit_on)[:, None] + gap.seconds(decoded)
    ends = np.cumsum(per_batch, axis=1)

    run_of = {q.id: q.origin.run for q in requests}
    answers = [[run_of[i] for q in b for i in (q.id, *dupes.get(q.id, ()))] for b in batches]  # runs served per batch
    last_batch: dict[str, int] = {}
    for bi, runs in enumerate(answers):
        for run in runs:
            last_batch[run] = bi
    run_finish = {run: ends[:, bi] for run, bi in last_batch.items()}
    return Projection(ends[:, -1], run_finish, ends, batches, point, answers)


@dataclass(frozen=True)
class Gap:
    """Seconds from one batch's end to the next one's start, which no batch's own clock sees: the
    parent takes the results in, journals them and sends the next batch. A fixed part and a part
    per decoded token of the batch that ended (its results' size): measured, a 32-row batch of 50
    tokens each leaves a 45 ms gap where the probe's 4-row batches left 6 ms."""
    fixed_s: float = 0.0
    per_token_s: float = 0.0

    def seconds(self, decoded):
        return self.fixed_s + self.per_token_s * decoded


def between_batches(results: Iterable[GenerationResult]) -> Gap:
    """The gaps between consecutive batches, fitted (non-negative) on the decoded tokens of the
    batch before each; their mean alone where fewer than three gaps or one size."""
    spans: dict[int, list[float]] = {}
    for r in results:
        if r.timings.finished is not None and r.timings.started is not None:
            span = spans.setdefault(r.batch_id, [r.timings.started, r.timings.finished, 0.0])
            span[2] += generated_tokens(r)
    ordered = sorted(spans.values())
    gaps = np.array([max(0.0, b[0] - a[1]) for a, b in zip(ordered, ordered[1:])])
    tokens = np.array([a[2] for a in ordered[:-1]])
    if len(gaps) == 0:
        return Gap()
    if len(gaps) < 3 or np.ptp(tokens) == 0:
        return Gap(float(gaps.mean()))
    fixed, per_token = _nnls(np.column_stack([np.ones_like(tokens), tokens]), gaps)
    return Gap(float(fixed), float(per_token))


def holdout_factors(X: np.ndarray, y: np.ndarray, rng: np.random.Generator, samples: int, fit_on=None) -> np.ndarray:
    """[samples] factors actual / predicted for the suite's total, the first sample 1. Each probe
    batch is predicted by a fit on the others (leave one out): a model that fits its own batches
    well can still be off on batches it has not seen (another shape, another run's prompts, the
    machine's pace drifting), and that error is shared by the full run's batches (on one machine at
    one pace): it does not average out over them, so a sample takes one such error, not a mean.
    A probe gives few of them (4-8 batches), and the range of n ratios holds the next one only
    with probability (n-1)/(n+1) (60% at n = 4): a sample is drawn from the Student-t prediction
    interval of their logs, exp(t_{n-1} * s * sqrt(1 + 1/n)), not from the ratios themselves
    (measured on a quiet machine: drawing the ratios themselves left 2 of the demo's 4 actual times
    outside the 90% interval, bench/test_prediction_accuracy.py). Needs three batches at least (ones
    otherwise). `fit_on(indices)`: the fit on those batches (default: on them alone; project's
    adds the calibration batches)."""
    fit_on = fit_on or (lambda idx: fit(X[idx], y[idx]))
    m = len(y)
    out = np.ones(samples)
    if m < 3:
        return out
    ratios = []
    for i in range(m):
        keep = np.arange(m) != i
        pred = float(X[i] @ fit_on(np.flatnonzero(keep)))  # the batch's seconds under the others' fit
        if pred > 0:
            ratios.append(float(y[i].sum()) / pred)
    n = len(ratios)
    if n < 3:
        return out
    spread = float(np.std(np.log(ratios), ddof=1)) * np.sqrt(1 + 1 / n)
    out[1:] = np.exp(spread * rng.standard_t(n - 1, size=samples - 1))
    return out


def expected_prefill(batches: Sequence[Sequence[GenerationRequest]], lengths: dict[str, int],
                     groups: dict[str, PrefixGroup], cache_bytes: int | None, bytes_per_token: int = 1) -> list[int]:
    """Each batch's prefill tokens as the backend will compute them: a batch whose requests all
    share a group's prefix runs only their suffixes, plus the prefix itself (once) when it is not
    in the backend's cache: least recently used first out, `cache_bytes` at most, an entry being
    its group's prefix at `bytes_per_token`. None: the backend shares no prefix at all."""
    cache: PrefixCache[str, None] = PrefixCache(cache_bytes or 0)
    out = []
    for b in batches:
        g = {groups[q.id] if q.id in groups else None for q in b}
        group = g.pop() if len(g) == 1 else None
        if group is None or group.tokens == 0 or cache_bytes is None:
            out.append(len(b) * max(lengths[q.id] for q in b))
            continue
        hit = group.key in cache
        if hit:
            cache.get(group.key)
        else:
            cache.put(group.key, None, group.tokens * bytes_per_token)
        cached = [group.tokens] * len(b) if hit else [0] + [group.tokens] * (len(b) - 1)
        out.append(prefill_tokens([lengths[q.id] for q in b], cached))
    return out


def answered_by(projection: Projection, budget_s: float) -> dict[str, int]:
    """Requests per run answered within the budget, on the median timeline."""
    median_ends = np.median(projection.batch_ends_s, axis=0)
    counts: dict[str, int] = {}
    for bi, runs in enumerate(projection.answers):
        if median_ends[bi] <= budget_s:
            for run in runs:
                counts[run] = counts.get(run, 0) + 1
    return counts

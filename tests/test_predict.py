"""The cost model on recorded timings (synthetic batches with known costs) and the projection."""

from __future__ import annotations

import numpy as np
import pytest

from effbench.contracts import GenerationRequest, GenerationResult, Origin, Timings
from effbench.predict.cost_model import answered_by, batch_observations, between_batches, fit, holdout_factors, project, stratified_probe

TRUE = dict(fixed=0.05, prefill=2e-4, step=0.01, row=0.002)  # s/batch, s/prompt token, s/step, s/token


def recorded(batches):
    """Results whose timings follow TRUE exactly: batches = [[(prompt, generated), ...], ...]."""
    out, clock = [], 1000.0
    for bid, rows in enumerate(batches):
        P = len(rows) * max(p for p, _ in rows)
        S, R = max(g for _, g in rows), sum(g for _, g in rows)
        pre = TRUE["fixed"] + TRUE["prefill"] * P
        dec = TRUE["step"] * S + TRUE["row"] * R
        t = Timings(clock, clock, clock + pre, clock + pre + dec)
        for k, (p, g) in enumerate(rows):
            out.append(GenerationResult(f"r{bid}#{k}", (), p, g, t, bid, len(rows), p + g))
        clock += pre + dec
    return out


def test_fit_recovers_known_costs_from_recorded_batches():
    rng = np.random.default_rng(1)
    batches = [[(int(rng.integers(50, 900)), int(rng.integers(1, 60))) for _ in range(int(rng.integers(1, 9)))]
               for _ in range(25)]
    X, y = batch_observations(recorded(batches))
    assert X.shape == (25, 4) and y.shape == (25, 2)
    coef = fit(X, y)
    assert coef == pytest.approx([TRUE["fixed"], TRUE["prefill"], TRUE["step"], TRUE["row"]], rel=1e-6)


def test_the_time_between_batches_is_measured_and_projected_per_batch():
    """A scheduler that idles 0.2 s between batches: between_batches reads it off the batches'
    own clocks (not the time before the first one), and the projection pays it once per batch."""
    from dataclasses import replace

    batches = [[(300, 10)] * 4 for _ in range(6)]
    results = recorded(batches)
    shifted = [replace(r, timings=Timings(*(t + 0.2 * r.batch_id + 5.0 for t in (r.timings.queued, r.timings.started,
                                                                                r.timings.first_token, r.timings.finished))))
               for r in results]
    assert between_batches(results).fixed_s == pytest.approx(0.0, abs=1e-9)
    assert between_batches(shifted).fixed_s == pytest.approx(0.2) and between_batches(shifted).per_token_s == 0.0
    reqs = [GenerationRequest(id=r.request_id, prompt=f"x{i}", max_tokens=10, origin=Origin(run="r", index=i)) for i, r in enumerate(results)]
    lengths = {q.id: 300 for q in reqs}
    base = project(reqs, lengths, results, 4, samples=20)
    gapped = project(reqs, lengths, results, 4, samples=20, gap=0.2)
    assert len(gapped.batches) >= 6
    assert gapped.quantiles([0.5])[0] - base.quantiles([0.5])[0] == pytest.approx(0.2 * len(gapped.batches), rel=1e-6)


def test_a_gap_that_grows_with_the_results_is_projected_for_wider_batches():
    """The parent journals a batch's results before sending the next: 1 ms plus 30 us per decoded
    token. Fitted on narrow probe batches, the gap after a full-width batch is what it costs."""
    from dataclasses import replace

    rng = np.random.default_rng(3)
    batches = [[(200, int(rng.integers(5, 50)))] * int(rng.integers(1, 5)) for _ in range(6)]
    results, shift, ends = recorded(batches), 0.0, {}
    moved = []
    for bid in range(len(batches)):
        rows = [r for r in results if r.batch_id == bid]
        moved += [replace(r, timings=Timings(*(t + shift for t in (r.timings.queued, r.timings.started, r.timings.first_token,
                                                                  r.timings.finished)))) for r in rows]
        shift += 0.001 + 3e-5 * sum(r.output_tokens for r in rows)
    gap = between_batches(moved)
    assert gap.fixed_s == pytest.approx(0.001, abs=1e-6) and gap.per_token_s == pytest.approx(3e-5, rel=1e-3)
    assert gap.seconds(32 * 50) == pytest.approx(0.049, rel=1e-3)  # a 32-row batch of 50 tokens each


def test_holdout_factors_spread_with_the_models_error_on_unseen_batches():
    """Leave-one-out: batches the linear model fits exactly give factors of 1; noisy ones spread
    them around 1 (the first sample, the point projection, stays 1)."""
    rng = np.random.default_rng(0)
    batches = [[(int(rng.integers(50, 900)), int(rng.integers(1, 60))) for _ in range(4)] for _ in range(8)]
    X, y = batch_observations(recorded(batches))
    exact = holdout_factors(X, y, np.random.default_rng(1), 200)
    assert exact == pytest.approx(np.ones(200), abs=1e-6)
    noisy = holdout_factors(X, y * rng.uniform(0.8, 1.2, size=y.shape), np.random.default_rng(1), 200)
    assert noisy[0] == 1.0 and noisy.std() > 0.01 and 0.9 < np.median(noisy) < 1.1
    assert holdout_factors(X[:2], y[:2], np.random.default_rng(1), 5) == pytest.approx(np.ones(5))


def test_fit_never_makes_a_batch_cheaper():
    X = np.array([[1, 100, 5, 10], [1, 200, 5, 40], [1, 400, 10, 20]], dtype=float)
    y = np.array([[0.1, 0.5], [0.1, 0.2], [0.3, 0.4]])  # decode time falling with more tokens: noise
    assert (fit(X, y) >= 0).all()


def _requests(runs=4, per_run=50, max_tokens=20):
    return [GenerationRequest(id=f"run{r}#{i}", prompt=f"{r} {i}", max_tokens=max_tokens, origin=Origin(run=f"run{r}", index=i))
            for r in range(runs) for i in range(per_run)]


def test_stratified_probe_takes_a_share_of_every_run():
    reqs = _requests()
    probe = stratified_probe(reqs, 0.1)
    assert len(probe) == 20 and {q.origin.run for q in probe} == {"run0", "run1", "run2", "run3"}
    assert stratified_probe(reqs, 0.1) == probe  # seeded
    assert len(stratified_probe(reqs[:3], 0.01)) == 1  # at least one per run


def test_projection_of_the_probed_workload_matches_its_recorded_time():
    reqs = _requests()
    lengths = {q.id: 100 + 10 * (q.origin.index % 7) for q in reqs}
    gen = {q.id: 5 + q.origin.index % 10 for q in reqs}  # outputs 5..14 tokens, below max_tokens 20
    probe = stratified_probe(reqs, 0.25)
    from effbench.execute.order import plan_batches

    pbatches, _ = plan_batches(probe, lengths, 8, "effbench")
    results = recorded([[(lengths[q.id], gen[q.id]) for q in b] for b in pbatches])
    ids = iter([q.id for b in pbatches for q in b])
    results = [GenerationResult(next(ids), r.completions, r.prompt_tokens, r.output_tokens, r.timings, r.batch_id,
                                r.batch_size, r.computed_tokens) for r in results]
    proj = project(reqs, lengths, results, 8, samples=200)
    lo, mid, hi = proj.quantiles()
    # The truth: TRUE applied to the full workload's batches with the real output lengths.
    fbatches, _ = plan_batches(reqs, lengths, 8, "effbench")
    truth = sum(TRUE["fixed"] + TRUE["prefill"] * len(b) * max(lengths[q.id] for q in b)
                + TRUE["step"] * max(gen[q.id] for q in b) + TRUE["row"] * sum(gen[q.id] for q in b) for b in fbatches)
    # within 10%; the interval is about coefficient and output-length uncertainty, so allow its edge
    assert abs(mid - truth) / truth < 0.1 and 0.9 * lo <= truth <= 1.1 * hi
    assert set(proj.run_finish_s) == {"run0", "run1", "run2", "run3"}
    done = answered_by(proj, mid / 2)
    assert 0 < sum(done.values()) < len(reqs)  # half the time: part of the work
    assert sum(answered_by(proj, hi * 2).values()) == len(reqs)


def test_outputs_are_bounded_by_max_tokens_and_unprobed_runs_are_pessimistic():
    reqs = _requests(runs=2, per_run=16, max_tokens=8)
    lengths = {q.id: 50 for q in reqs}
    probe = [q for q in reqs if q.origin.run == "run0"][:8]
    results = recorded([[(50, 30) for _ in probe]])  # 30 generated, but max_tokens is 8 for the rest
    results = [GenerationResult(q.id, (), r.prompt_tokens, r.output_tokens, r.timings, 0, 8, r.computed_tokens)
               for q, r in zip(probe, results)]
    proj = project(reqs, lengths, results, 8, samples=20)
    assert np.isfinite(proj.total_s).all() and (proj.total_s > 0).all()


def test_prefill_counts_uncached_tokens_and_the_prefix_once_per_cache_miss():
    from effbench.predict.cost_model import expected_prefill, prefill_tokens
    from effbench.execute.prefix import PrefixGroup

    # observed: a batch that computed a 90-token prefix (its first row), then one served from the cache
    # on a prefix the suffixes count unpadded (packed by the HF backend): 10 + 20, not 2 x 20
    assert prefill_tokens([100, 110], [0, 90]) == 10 + 20 + 90
    assert prefill_tokens([100, 110], [90, 90]) == 10 + 20
    assert prefill_tokens([100, 110], [0, 0]) == 2 * 110  # no reuse: rows x the longest, padding included

    ga, gb = PrefixGroup("prefix:a", 90), PrefixGroup("prefix:b", 80)
    mk = lambda run, n: [GenerationRequest(id=f"{run}#{i}", prompt="", max_tokens=1, origin=Origin(run=run, index=i)) for i in range(n)]
    a1, a2, b1 = mk("a", 2), [GenerationRequest(id=f"a#{i}", prompt="", max_tokens=1, origin=Origin(run="a", index=i)) for i in (2, 3)], mk("b", 2)
    groups = {q.id: ga for q in a1 + a2} | {q.id: gb for q in b1}
    lengths = {q.id: 100 for q in a1 + a2 + b1}
    order = [a1, b1, a2]
    # the cache's bound in bytes, 3 bytes per token here: a's entry is 270 bytes, b's 240
    assert expected_prefill(order, lengths, groups, 510, 3) == [2 * 10 + 90, 2 * 20 + 80, 2 * 10]  # a is still cached
    assert expected_prefill(order, lengths, groups, 509, 3) == [2 * 10 + 90, 2 * 20 + 80, 2 * 10 + 90]  # evicted by b
    assert expected_prefill(order, lengths, groups, 269, 3)[2] == 2 * 10 + 90  # a never fits: never kept
    # a bound of 0: nothing kept across batches, but a batch's rows still share its prefix
    assert expected_prefill(order, lengths, groups, 0, 3) == [2 * 10 + 90, 2 * 20 + 80, 2 * 10 + 90]
    assert expected_prefill(order, lengths, groups, None) == [200, 200, 200]  # a backend that shares no prefix


def test_calibration_batches_at_full_width_tell_steps_from_rows():
    """Probe batches all 4 rows wide cannot tell a decode step's cost from its rows'; the full run's
    are 16 wide. The calibration batches (one prompt, 16 identical greedy rows, 32 and 200 steps:
    cost_model.calibration_requests) fix the split. And the fit weighs a batch by its seconds: where
    the probe's narrow batches run a decode step 20% cheaper than the model's form says (as the
    generation case's 1-2-row batches did), the short calibration alone is outweighed and the
    projection lands 10% low; the long one, as heavy as a probe batch, pulls it back."""
    from dataclasses import replace

    from effbench.contracts import Completion
    from effbench.execute.order import plan_batches
    from effbench.predict.cost_model import CALIBRATION_SUFFIX, calibration_requests

    costs = dict(fixed=0.05, prefill=2e-4, step=0.03, row=0.0005)  # step-dominated decode
    reqs = _requests(runs=4, per_run=64, max_tokens=200)
    lengths = {q.id: 100 for q in reqs}

    def timed(rows, bid, clock, pace=1.0):  # rows: [(request id, prompt, steps, completions)]
        P, S = sum(p for _, p, _, _ in rows), max(s for _, _, s, _ in rows)
        pre = costs["fixed"] + costs["prefill"] * P
        dec = pace * (costs["step"] * S + costs["row"] * sum(s * n for _, _, s, n in rows))
        t = Timings(clock, clock, clock + pre, clock + pre + dec)
        return [GenerationResult(i, tuple(Completion("", (), "length") for _ in range(n)), p, s * n, t, bid, len(rows), p + s * n)
                for i, p, s, n in rows], t.finished

    probe = stratified_probe(reqs, 1 / 16)  # 4 per run
    pbatches = [[q for q in probe if q.origin.run == run] for run in ("run0", "run1", "run2", "run3")]  # 4 rows each
    assert {len(b) for b in pbatches} == {4}  # one width only: steps and rows collinear
    narrow = [b[:k] for k, b in zip((1, 2, 3, 4), pbatches)]  # 1-4 rows: a step and a row told apart, at the probe's pace
    calibs = calibration_requests(probe, lengths, 16)
    assert [c.max_tokens for c in calibs] == [32, 200]  # the long one bounded by max_tokens
    assert all(c.id.split(CALIBRATION_SUFFIX)[0] in lengths and c.num_completions == 16 and c.greedy and c.stop_sequences == ()
               for c in calibs)
    assert [c.max_tokens for c in calibration_requests([replace(q, max_tokens=20) for q in probe], lengths, 16)] == [20]
    assert calibration_requests(probe, lengths, 1) == []
    assert calibration_requests([replace(q, max_tokens=1) for q in probe], lengths, 16) == []  # nothing decodes
    fbatches, _ = plan_batches(reqs, lengths, 16, "effbench")
    truth = sum(costs["fixed"] + costs["prefill"] * 100 * len(b) + costs["step"] * 200 + costs["row"] * 200 * len(b) for b in fbatches)

    def projected(pace: float, calibrate: list, batches=pbatches) -> float:
        results, clock = [], 0.0
        for bid, b in enumerate(batches):
            got, clock = timed([(q.id, 100, 200, 1) for q in b], bid, clock, pace)
            results += got
        calibrated = []
        for bid, c in enumerate(calibrate, 99):
            got, clock = timed([(c.id, 100, c.max_tokens, 16)], bid, clock)
            calibrated += got
        return project(reqs, lengths, results, 16, samples=50, calibration=calibrated).quantiles([0.5])[0] / truth

    assert projected(1.0, calibs[:1]) == pytest.approx(1.0, abs=0.02)  # the model's own form: either calibration
    assert projected(1.0, calibs) == pytest.approx(1.0, abs=0.02)
    assert abs(projected(1.0, []) - 1) > 0.1  # none: the 4-row probe alone cannot split a step from a row
    short, both = projected(0.8, calibs[:1], narrow), projected(0.8, calibs, narrow)
    assert short < 0.93 and abs(both - 1) < abs(short - 1) / 2, (short, both)
    X, _ = batch_observations(timed([(calibs[0].id, 100, 32, 16)], 99, 0.0)[0])
    assert X.tolist() == [[1.0, 100.0, 32.0, 512.0]]  # one prompt prefilled, 32 steps, 16 rows decoded


def _stat(steal_per_core: float, busy_per_core: float, idle_per_core: float, cpus: int) -> str:
    """/proc/stat's CPU lines in clock ticks: the machine's line, then one per CPU."""
    import os

    tick = os.sysconf("SC_CLK_TCK")
    one = [busy_per_core, 0, 0, idle_per_core, 0, 0, 0, steal_per_core, 0, 0]
    line = lambda name, k: " ".join([name] + [str(int(round(v * tick * k))) for v in one])
    return "\n".join([line("cpu", cpus)] + [line(f"cpu{i}", 1) for i in range(cpus)] + ["intr 1 2 3", "cpu7 9 9 9"])


def test_steal_is_read_on_this_processs_cores_during_the_probe_and_since_boot():
    """check reports the steal during the probe next to the usual share (since boot), counting only
    the cores this process may use; steal above the contended share widens the interval."""
    import os

    from effbench.predict.contention import core_times, contention_between

    n = len(os.sched_getaffinity(0))
    cpus = max(os.sched_getaffinity(0)) + 3  # two CPUs outside the mask, as busy as ours: not counted
    # since boot: 1,000 s per core, 5 of them stolen (0.5%); then 10 s of probe, 2.5 s per core stolen
    before = core_times(_stat(5, 600, 395, cpus))
    after = core_times(_stat(7.5, 607.5, 395, cpus))
    assert before.total == pytest.approx(1000 * n) and before.steal == pytest.approx(5 * n)
    c = contention_between(before, after, ours=7.5 * n, seconds=10.0)
    assert c.usual_steal == pytest.approx(0.005) and c.steal_share == pytest.approx(0.25)
    assert c.other_cores == pytest.approx(0.0, abs=1e-9)
    assert c.contended and c.widen == pytest.approx(1.25) and c.to_json()["usual_steal_share"] == 0.005
    quiet = contention_between(before, core_times(_stat(5, 607.5, 397.5, cpus)), ours=7.5 * n, seconds=10.0)
    assert quiet.steal_share == 0.0 and not quiet.contended and quiet.widen == 1.0
    # others busy on our cores: 5 s of each core's 10 s that this process tree did not use
    busy = contention_between(before, core_times(_stat(5, 612.5, 392.5, cpus)), ours=7.5 * n, seconds=10.0)
    assert busy.other_cores == pytest.approx(0.5 * n) and busy.share == pytest.approx(0.5) and busy.contended


def test_a_phase_reports_what_other_processes_and_the_hypervisor_took_of_its_cores():
    """results.json's profile gives each phase the steal share and other processes' cores, as
    check reports them for its probe: a busy process that is not ours counts, our own work does not."""
    import os
    import signal
    import subprocess
    import time

    from effbench.predict.profiler import Telemetry

    tel = Telemetry(interval=0.2)
    with tel:
        t0 = time.time()
        hog = int(subprocess.run(["sh", "-c", "yes >/dev/null 2>&1 & echo $!"], capture_output=True, text=True,
                                 check=True).stdout)  # reparented to init: not this process's child
        mine = time.process_time()
        try:
            while time.process_time() - mine < 1.0 or time.time() - t0 < 2.0:  # our own CPU: not others'
                pass
        finally:
            os.kill(hog, signal.SIGKILL)
        t1 = time.time()
    ph = tel.summary(t0, t1)
    assert ph["cpu_seconds"] >= 1.0
    assert ph["other_cores"] >= 0.5  # the hog kept one core busy (more where the machine is busy too)
    assert 0.0 <= ph["steal_share"] < 1.0


def test_the_profiles_cpu_seconds_do_not_drop_when_the_worker_exits(demo_submission, cache_dir):
    """The worker's CPU seconds leave the sum of live children when it exits and join children_*
    when it is reaped; a sample in between lost them (measured: an 85 s execute phase with -0.03 CPU
    s, in 1 of 3 closes sampled every 2 ms). Three real workers closed under a 1 ms sampler: the
    cumulative figure never goes back."""
    from effbench.execute.worker import BackendWorker
    from effbench.predict.profiler import Telemetry
    from effbench.submission import Submission

    sub = Submission.load(demo_submission)
    tel = Telemetry(interval=0.001)
    with tel:
        for _ in range(3):
            worker = BackendWorker(sub, cache_dir=cache_dir)
            worker.start()
            worker.close()
    cpu = [s.cpu_seconds for s in tel.samples]
    assert len(cpu) > 100 and cpu[-1] > 1.0  # three workers' loads were counted
    assert all(b >= a for a, b in zip(cpu, cpu[1:]))


def test_check_prints_contention_and_steal_above_the_usual_share():
    """check's lines about the cores (cli.check.contention_lines): widened when others took more
    than the contended share; steal named when the probe saw 2+ points more than since boot."""
    from effbench.cli.check import contention_lines
    from effbench.predict.contention import Contention

    quiet = Contention(10.0, 0.05, 0.01, 2, usual_steal=0.005).to_json()
    assert contention_lines(quiet) == [] and contention_lines(None) == []
    burst = contention_lines(Contention(10.0, 0.0, 0.25, 2, usual_steal=0.005).to_json())
    assert len(burst) == 2 and "widened x1.25" in burst[0] and burst[1].startswith("steal: the hypervisor took 25.0%")
    assert "0.5% since boot" in burst[1]
    busy = contention_lines(Contention(10.0, 1.2, 0.0, 2).to_json())
    assert len(busy) == 1 and "used 60% of this process's 2 cores" in busy[0] and "1.20 cores' worth" in busy[0]

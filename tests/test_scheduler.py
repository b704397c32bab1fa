"""The scheduler with the real demo backend in process: batching, journal round trip, duplicates."""

from __future__ import annotations

from dataclasses import replace

import json
import warnings

import pytest

from effbench.contracts import EffbenchError, GenerationRequest, Origin
from effbench.execute.executor import InProcess
from effbench.execute.journal import Journal, plan_digest, read_journal
from effbench.execute.order import plan_batches
from effbench.execute.scheduler import Scheduler


def reqs(n=10, run="r"):
    return [GenerationRequest(id=f"{run}#{i}", prompt="one two " * (i + 1), max_tokens=2, origin=Origin(run=run, index=i))
            for i in range(n)]


def lengths(rs):
    return {r.id: len(r.prompt) for r in rs}


def test_batches_respect_max_size_and_group_by_max_tokens():
    rs = [GenerationRequest(id=f"{i % 3}#{i}", prompt="x" * i, max_tokens=1 if i % 3 else 50, origin=Origin(run=str(i % 3)))
          for i in range(30)]
    for order in ("effbench", "helm"):
        batches, _ = plan_batches(rs, lengths(rs), 4, order)
        assert sorted(r.id for b in batches for r in b) == sorted(r.id for r in rs)
        assert all(len(b) <= 4 and len({r.max_tokens for r in b}) == 1 for b in batches)
    with pytest.raises(ValueError):
        plan_batches(rs, lengths(rs), 4, "random")


def test_scheduler_runs_every_request_and_journals_each_batch(hf_backend, tmp_path):
    rs = reqs(10)
    seen = []
    journal = Journal(tmp_path / "journal.jsonl", {"plan_digest": plan_digest(rs)})
    report = Scheduler(InProcess(hf_backend), 4).execute(rs, lengths(rs), order="helm", journal=journal,
                                                          on_batch=lambda b, r: seen.append(len(b)))
    journal.close()
    assert set(report.results) == {r.id for r in rs} and seen == [4, 4, 2] and report.batches == 3
    assert all(r.timings.queued <= r.timings.started <= r.timings.finished for r in report.results.values())
    header, back, events = read_journal(tmp_path / "journal.jsonl")
    assert header["plan_digest"] == plan_digest(rs) and [e["kind"] for e in events] == ["execute"]
    assert {r.request_id: r for r in back} == report.results  # lossless round trip, logprobs included


def test_duplicate_prompts_are_computed_once_and_fanned_out(hf_backend):
    a = reqs(3, "a")
    b = [GenerationRequest(id=f"b#{i}", prompt=r.prompt, max_tokens=2, origin=Origin(run="b", index=i)) for i, r in enumerate(a)]
    report = Scheduler(InProcess(hf_backend), 8).execute(a + b, lengths(a + b), order="effbench")
    for x, y in zip(a, b):
        rx, ry = report.results[x.id], report.results[y.id]
        assert rx.completions == ry.completions
        assert rx.computed_tokens > 0 and ry.computed_tokens == 0  # the copy cost nothing


def test_torn_last_journal_line_is_dropped_with_a_warning(hf_backend, tmp_path):
    rs = reqs(4)
    path = tmp_path / "journal.jsonl"
    journal = Journal(path, {"plan_digest": "x"})
    Scheduler(InProcess(hf_backend), 2).execute(rs, lengths(rs), order="helm", journal=journal)
    journal.close()
    text = path.read_text()
    path.write_text(text[: len(text) - 40])  # a kill in the middle of the last write
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, back, _ = read_journal(path)
    assert len(back) == 3 and any("torn last journal line" in str(w.message) for w in caught)
    assert path.read_text() == text[: len(text) - 40]  # reading never writes (--resume cuts it: test_journal_records)
    lines = path.read_text().splitlines()
    lines[1] = lines[1][:20]  # damage in the middle is not a torn write: refused
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(EffbenchError, match=r"journal.jsonl:2: corrupt journal line"):
        read_journal(path)
    assert json.loads(lines[0])["kind"] == "header"


def _prefixed(run: str, n: int, prefix: list[int], start: int = 0) -> tuple[list[GenerationRequest], dict[str, list[int]]]:
    rs = [GenerationRequest(id=f"{run}#{i}", prompt=f"{run} {i}", max_tokens=1, origin=Origin(run=run, index=i))
          for i in range(start, start + n)]
    return rs, {r.id: prefix + [1000 + i, 2000 + i * 7 % 5] for i, r in enumerate(rs)}


def test_prefix_groups_are_found_from_the_tokens():
    from effbench.execute.prefix import MIN_SHARED_PREFIX, prefix_groups

    shared = list(range(1, 61))  # 60 tokens: instructions and in-context examples
    a, ta = _prefixed("a", 5, shared)
    b, tb = _prefixed("b", 4, shared)  # another run with the very same prefix: one group with a
    c, tc = _prefixed("c", 4, list(range(100, 160)))
    d, td = _prefixed("d", 4, list(range(7, 7 + MIN_SHARED_PREFIX - 2)))  # too short to be worth it
    e, te = _prefixed("e", 1, shared)  # one request shares nothing
    g = prefix_groups(a + b + c + d + e, ta | tb | tc | td | te)
    assert g["a#0"] == g["b#3"] and g["a#0"].tokens == 60  # the shared prefix, not the differing tails
    assert g["c#0"].tokens == 60 and g["c#0"].key != g["a#0"].key
    assert g["d#0"].tokens == 0 and g["d#0"].key == "run:d"
    assert g["e#0"].tokens == 0
    # a prompt that is all prefix keeps one token of its own: the backend needs a suffix to run
    f, tf = _prefixed("f", 2, shared)
    tf["f#0"] = shared[:40]
    assert prefix_groups(f, tf)["f#1"].tokens == 39


def test_a_long_generation_run_first_batch_is_filled_and_runs_after_the_cheap_ones():
    """GSM8K-like: the only run at max_tokens 400 would send its first request alone through 400
    decode steps; its first batch is filled up with more of its prefix group instead, and the
    first batches go cheapest first (every short run's first answers before the long decode)."""
    from effbench.execute.prefix import prefix_groups

    long_run, tl = _prefixed("gsm", 10, list(range(500, 560)))
    long_run = [replace(r, max_tokens=400) for r in long_run]
    short = {name: _prefixed(name, 6, list(range(k * 100, k * 100 + 50))) for k, name in enumerate("ab")}
    rs = long_run + [r for reqs, _ in short.values() for r in reqs]
    ids = {**tl, **{i: t for _, toks in short.values() for i, t in toks.items()}}
    batches, _ = plan_batches(rs, {r.id: len(ids[r.id]) for r in rs}, 8, "effbench", prefix_groups(rs, ids))
    assert {r.origin.run for r in batches[0]} == {"a", "b"}  # one-token runs' first requests, first
    assert [r.origin.run for r in batches[1]] == ["gsm"] * 8  # then the long run's first batch, full
    assert sum(len(b) for b in batches if b[0].origin.run == "gsm") == 10 and len(batches) == 5
    assert sorted(r.id for b in batches for r in b) == sorted(r.id for r in rs)


def test_effbench_order_keeps_prefix_groups_together_in_chunks_and_serves_every_run_first():
    from effbench.execute.prefix import CHUNK_BATCHES, prefix_groups

    runs = {name: _prefixed(name, 40, list(range(k * 100, k * 100 + 50))) for k, name in enumerate("abcde")}
    rs = [r for reqs, _ in runs.values() for r in reqs]
    ids = {i: t for _, toks in runs.values() for i, t in toks.items()}
    groups = prefix_groups(rs, ids)
    batches, _ = plan_batches(rs, {r.id: len(ids[r.id]) for r in rs}, 4, "effbench", groups)
    assert {r.origin.run for r in batches[0] + batches[1]} == set("abcde")  # the first request of every run first
    assert [r.origin.run for r in batches[1]] == list("eeee")  # e's, alone in its batch, filled up with more of e
    rest = batches[2:]
    assert all(len({groups[r.id].key for r in b}) == 1 for b in rest)  # a batch shares one prefix
    # consecutive batches of one group come in chunks (the backend computes the prefix once per chunk)
    keys = [groups[b[0].id].key for b in rest]
    runs_of_chunks = [k for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k]
    assert len(runs_of_chunks) <= len(rest) / CHUNK_BATCHES + 5
    # and groups advance together: after one round of chunks, every run has one chunk done
    round_one = [r.origin.run for b in batches[: 2 + 5 * CHUNK_BATCHES] for r in b]
    assert all(round_one.count(run) == 1 + 4 * CHUNK_BATCHES for run in "abcd") and round_one.count("e") == 4 + 4 * CHUNK_BATCHES
    assert sorted(r.id for b in batches for r in b) == sorted(r.id for r in rs)

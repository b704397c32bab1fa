"""The scheduler with the real demo backend in process: batching, journal round trip, duplicates."""

from __future__ import annotations

import json
import warnings

import pytest

from effbench.contracts import EffbenchError, GenerationRequest, Origin
from effbench.journal import Journal, plan_digest, read_journal
from effbench.scheduler import InProcess, Scheduler, plan_batches


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
    assert path.read_text().endswith("\n")  # cut back to whole lines, so appends start clean
    lines = path.read_text().splitlines()
    lines[1] = lines[1][:20]  # damage in the middle is not a torn write: refused
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(EffbenchError, match=r"journal.jsonl:2: corrupt journal line"):
        read_journal(path)
    assert json.loads(lines[0])["kind"] == "header"

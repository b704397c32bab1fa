"""A journal line that is valid JSON but of the wrong shape is one error naming its line and field,
and `effbench run --resume` stops on it before anything runs: the journal is left as it was.
Reading a journal never writes it (a torn last line is cut only by --resume); a version 1
journal is still resumed."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from effbench.cli import app
from effbench.contracts import EffbenchError
from effbench.execute.journal import JOURNAL_VERSION, read_journal

runner = CliRunner()


@pytest.fixture(scope="module")
def journaled_run(demo_submission, cache_dir, tmp_path_factory) -> Path:
    """A finished real run of one scenario (20 requests), in process: its journal is the material."""
    out = tmp_path_factory.mktemp("journaled") / "out"
    res = runner.invoke(app, ["run", str(demo_submission), "--out", str(out), "--cache-dir", str(cache_dir),
                              "--runs", "dyck*", "--in-process", "--order", "helm"])
    assert res.exit_code == 0, res.output
    return out


def copy_run(src: Path, dst: Path) -> Path:
    """A copy that --resume can continue as it is (the output folder is the unit of a run)."""
    shutil.copytree(src, dst)
    (dst / "results.json").unlink()
    return dst


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_records(path: Path, recs: list) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs))


def first_result(recs: list[dict]) -> int:
    return next(i for i, r in enumerate(recs) if r["kind"] == "result")


def _set(key, value):
    return lambda r: r.update({key: value})


def _timings(fn):
    return lambda r: fn(r["timings"])


# (what is damaged, how, the field the error must name)
DAMAGE = [
    ("completions is a string", _set("completions", "the answer"), "field 'completions'"),
    ("a completion text is a number", lambda r: r["completions"][0].update(text=3), "field 'completions.0.text'"),
    ("a logprob is a string", lambda r: r["completions"][0]["tokens"][0].update(logprob="-0.5"),
     "field 'completions.0.tokens.0.logprob'"),
    ("timings lacks a key", _timings(lambda t: t.pop("finished")), "field 'timings.finished': missing"),
    ("a timing is a string", _timings(lambda t: t.update(started="1700000000.0")), "field 'timings.started'"),
    ("prompt_tokens is a string", _set("prompt_tokens", "x"), "field 'prompt_tokens'"),
    ("a count is a float", _set("output_tokens", 3.5), "field 'output_tokens'"),
    ("error is a number", _set("error", 1), "field 'error'"),
    ("request_id missing", lambda r: r.pop("request_id"), "field 'request_id': missing"),
    ("unknown kind", _set("kind", "bogus"), "field 'kind': \"bogus\" is not a journal record kind"),
    ("no kind", lambda r: r.pop("kind"), "field 'kind': missing"),
]


@pytest.mark.parametrize("where", ["middle", "last"])
@pytest.mark.parametrize("what,damage,field", DAMAGE, ids=[d[0] for d in DAMAGE])
def test_a_result_line_of_the_wrong_shape_names_its_line_and_field(journaled_run, tmp_path, where, what, damage, field):
    path = tmp_path / "journal.jsonl"
    recs = records(journaled_run / "journal.jsonl")
    i = first_result(recs) if where == "middle" else len(recs) - 1
    assert recs[i]["kind"] == "result"
    damage(recs[i])
    write_records(path, recs)
    before = path.read_bytes()
    with pytest.raises(EffbenchError) as e:
        read_journal(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}:{i + 1}: {field}") and "\n" not in msg, msg
    assert path.read_bytes() == before  # a valid-JSON last line is no torn write: nothing cut off


@pytest.mark.parametrize("line,expected", [
    ([1, 2], "not a journal record: Input should be an object (got [1, 2])"),
    ("result", "not a journal record"),
    (None, "not a journal record"),
])
def test_a_line_that_is_no_object_is_refused(journaled_run, tmp_path, line, expected):
    path = tmp_path / "journal.jsonl"
    recs = records(journaled_run / "journal.jsonl")
    i = first_result(recs)
    recs[i] = line
    write_records(path, recs)
    with pytest.raises(EffbenchError) as e:
        read_journal(path)
    assert f"journal.jsonl:{i + 1}: {expected}" in str(e.value), str(e.value)


def test_header_and_events_are_checked_too(journaled_run, tmp_path):
    path = tmp_path / "journal.jsonl"
    recs = records(journaled_run / "journal.jsonl")
    assert recs[0]["kind"] == "header" and recs[0]["version"] == JOURNAL_VERSION
    cases = [
        (0, lambda r: r.update(version=JOURNAL_VERSION + 1), f":1: field 'version': journal version {JOURNAL_VERSION + 1}"),
        (0, lambda r: r.update(version="1"), ":1: field 'version': Input should be a valid integer"),
        (0, lambda r: r.pop("plan_digest"), ":1: field 'plan_digest': missing (header record)"),
        (0, lambda r: r.update(kind="execute"), ":1: field 'started': missing (execute record)"),
        (1, lambda r: r.update(started="now"), ":2: field 'started': Input should be a valid number, got \"now\" (execute record)"),
        (1, lambda r: r.update(kind="header", version=JOURNAL_VERSION, plan_digest="x"),
         ":2: field 'kind': 'header' record; the header must be line 1"),
    ]
    for i, damage, expected in cases:
        bad = json.loads(json.dumps(recs))
        damage(bad[i])
        write_records(path, bad)
        with pytest.raises(EffbenchError) as e:
            read_journal(path)
        assert expected in str(e.value) and "\n" not in str(e.value), (expected, str(e.value))


def test_unknown_fields_are_ignored_and_a_torn_last_line_still_ignored(journaled_run, tmp_path):
    """Forward compatibility: a newer effbench may add fields. A torn (not JSON) last line is a
    kill mid-write, as before: ignored with a warning, and the file left as it is."""
    path = tmp_path / "journal.jsonl"
    recs = records(journaled_run / "journal.jsonl")
    header, results, events = read_journal(journaled_run / "journal.jsonl")
    for r in recs:
        r["added_later"] = {"any": [1, "shape"]}
    text = "".join(json.dumps(r) + "\n" for r in recs)
    path.write_text(text + text.splitlines()[-1][:30])
    before = path.read_bytes()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert read_journal(path) == (header, results, events)
    assert any("torn last journal line ignored" in str(w.message) for w in caught)
    assert path.read_bytes() == before  # reading never writes


def with_torn_line(journal: Path, keep_results: int | None = None) -> bytes:
    """Cut the journal after `keep_results` results (all: None) and add half of the next line,
    as a kill in the middle of a batch's write leaves it. Returns the whole lines kept."""
    lines = journal.read_text().splitlines(keepends=True)
    results = [i for i, line in enumerate(lines) if line.startswith('{"kind": "result"')]
    cut = len(lines) - 1 if keep_results is None else results[keep_results - 1] + 1
    whole = "".join(lines[:cut])
    journal.write_text(whole + lines[cut][:45])
    return whole.encode()


def test_report_and_simulate_leave_a_live_journal_as_it_is(journaled_run, tmp_path):
    """`effbench report --html` and `simulate` on a run whose journal ends in half a line (as
    while a batch is being written): they read it, and the file stays byte for byte the same."""
    out = tmp_path / "out"
    shutil.copytree(journaled_run, out)
    journal = out / "journal.jsonl"
    with_torn_line(journal)
    before = journal.read_bytes()
    for args in (["simulate", str(out), "--budget", "1m", "--json", str(tmp_path / "sim.json")], ["report", str(out), "--html"]):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output
        assert any("torn last journal line ignored" in str(w.message) for w in caught), args
        assert journal.read_bytes() == before, args
    assert (out / "report.html").is_file() and json.loads((tmp_path / "sim.json").read_text())["points"][0]["requests"] == 20


def test_resume_drops_a_torn_last_line_and_continues(journaled_run, tmp_path):
    out = copy_run(journaled_run, tmp_path / "out")
    whole = with_torn_line(out / "journal.jsonl", keep_results=6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = runner.invoke(app, ["run", "--resume", str(out)])
    assert res.exit_code == 0, res.output
    assert any("torn last journal line dropped" in str(w.message) for w in caught)
    text = (out / "journal.jsonl").read_bytes()
    assert text.startswith(whole)  # the half line cut, appends start on a fresh line
    recs = records(out / "journal.jsonl")  # every line whole JSON
    assert sum(r["kind"] == "result" for r in recs) == 20
    results = json.loads((out / "results.json").read_text())
    assert results["budget"]["resumed_results"] == 6 and results["totals"]["answered"] == 20


def test_a_version_1_journal_is_still_resumed(journaled_run, tmp_path):
    """A journal of the previous format (plan digest without top_p and seed, no submission
    fingerprint): resumed with a warning that the submission is not checked; with a digest of
    other requests, refused as before."""
    from effbench.challenge.helm_bridge import HelmSession
    from effbench.execute.journal import plan_digest
    from effbench.plan import Progress, RunOptions, plan_suite
    from effbench.results import load_run_config
    from effbench.submission import Submission
    from effbench.challenge.suites import load_suite

    out = copy_run(journaled_run, tmp_path / "out")
    config = load_run_config(out)
    suite = load_suite(config["suite"])
    opts = RunOptions.from_json({**config["options"], "out": str(tmp_path / "plan")})
    plan = plan_suite(Submission.load(config["submission"]), suite, opts, HelmSession(tmp_path / "plan" / "helm", suite.name),
                      Progress())
    recs = records(out / "journal.jsonl")
    recs[0] = {k: v for k, v in recs[0].items() if k != "fingerprint"} | {"version": 1, "plan_digest": "0" * 24}
    cut = [i for i, r in enumerate(recs) if r["kind"] == "result"][8]
    write_records(out / "journal.jsonl", recs[:cut])
    res = runner.invoke(app, ["run", "--resume", str(out)])
    assert "field 'plan_digest': the requests differ" in res.output and res.exit_code == 2, res.output

    recs[0]["plan_digest"] = plan_digest(plan.requests(suite.name), version=1)
    assert recs[0]["plan_digest"] != plan_digest(plan.requests(suite.name))
    write_records(out / "journal.jsonl", recs[:cut])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = runner.invoke(app, ["run", "--resume", str(out)])
    assert res.exit_code == 0, res.output
    assert any("(version 1) has no fingerprint of the submission" in str(w.message) for w in caught)
    results = json.loads((out / "results.json").read_text())
    assert results["budget"]["resumed_results"] == 8 and results["totals"]["answered"] == 20


@pytest.mark.parametrize("where", ["middle", "last", "header"])
def test_resume_stops_on_a_damaged_journal_before_anything_runs(journaled_run, tmp_path, where):
    out = copy_run(journaled_run, tmp_path / "out")
    journal = out / "journal.jsonl"
    recs = records(journal)
    if where == "header":
        i, field = 0, "field 'version'"
        recs[0]["version"] = JOURNAL_VERSION + 1
    else:
        i = first_result(recs) if where == "middle" else len(recs) - 1
        recs[i]["timings"]["queued"] = "soon"
        field = "field 'timings.queued'"
    write_records(journal, recs)
    before = journal.read_bytes()
    res = runner.invoke(app, ["run", "--resume", str(out)])
    assert res.exit_code == 2, res.output
    (line,) = [x for x in res.output.splitlines() if x.startswith("error:")]  # HELM logs to stdout too
    assert f"journal.jsonl:{i + 1}: {field}" in line and "Traceback" not in res.output, res.output
    assert journal.read_bytes() == before  # nothing executed, nothing appended, nothing cut
    assert not (out / "results.json").exists()

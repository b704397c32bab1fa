"""kill -9 at a random point, then --resume: the same metrics as an uninterrupted run. The output
folder is the unit of a run: --resume works on it as given, wherever it was moved or copied; a new
run never empties the journal of an earlier one; a resume against other requests or a changed
submission is refused, naming what changed."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from effbench.cli import app
from effbench.contracts import GenerationRequest, Origin
from effbench.execute.journal import plan_digest
from effbench.results import completion_texts
from test_budget import fault_submission

runner = CliRunner()
EFFBENCH = [sys.executable, "-m", "effbench.cli"]


def scores(out: Path) -> dict[str, dict]:
    return {r["name"]: r["metrics"] for r in json.loads((out / "results.json").read_text())["runs"]}


@pytest.mark.slow
def test_kill_9_then_resume_gives_the_metrics_of_an_uninterrupted_run(demo_submission, cache_dir, tmp_path):
    ref = tmp_path / "ref"
    res = runner.invoke(app, ["run", str(demo_submission), "--out", str(ref), "--cache-dir", str(cache_dir), "--order", "helm"])
    assert res.exit_code == 0, res.output

    # 1 s per batch of 8: the run is caught mid-run even when this test process is slow to poll
    sub = fault_submission(demo_submission, tmp_path, delay_s=1.0)
    out = tmp_path / "out"
    journal = out / "journal.jsonl"
    # results journaled before the kill: a replayable draw (EFFBENCH_TEST_SEED=N reruns a failure),
    # at least two batches before the end
    seed = int(os.environ.get("EFFBENCH_TEST_SEED", "20261202"))
    kill_after = random.Random(seed).randint(1, 60)
    proc = subprocess.Popen(EFFBENCH + ["run", str(sub), "--out", str(out), "--cache-dir", str(cache_dir), "--order", "helm"],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if journal.is_file() and journal.read_text().count('"kind": "result"') >= kill_after:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its backend worker, no cleanup
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (out / "results.json").exists()
    journaled = journal.read_text().count('"kind": "result"')
    assert kill_after <= journaled < 80, f"seed {seed}"

    res = runner.invoke(app, ["run", "--resume", str(out)])
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    assert results["budget"]["resumed_results"] == journaled
    assert results["totals"]["answered"] == 80
    assert scores(out) == scores(ref)
    assert completion_texts(out) == completion_texts(ref)


def test_resume_refuses_a_journal_of_another_plan(demo_submission, cache_dir, tmp_path):
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", str(demo_submission), "--out", str(out), "--cache-dir", str(cache_dir),
                              "--runs", "dyck*", "--in-process"])
    assert res.exit_code == 0, res.output
    config = json.loads((out / "run_config.json").read_text())
    config["options"]["run_filter"] = "synthetic_reasoning:mode=induction*"
    (out / "run_config.json").write_text(json.dumps(config))
    res = runner.invoke(app, ["run", "--resume", str(out)])
    assert res.exit_code == 2 and "field 'plan_digest': the requests differ (suite, options or data changed)" in res.output


def test_resume_needs_a_run_folder(tmp_path):
    res = runner.invoke(app, ["run", "--resume", str(tmp_path)])
    assert res.exit_code == 2 and "run_config.json: missing" in res.output
    res = runner.invoke(app, ["run", "--resume", str(tmp_path), "--out", str(tmp_path / "elsewhere")])
    assert res.exit_code == 2 and "a resumed run continues in its own folder; give only --resume" in res.output
    assert not (tmp_path / "elsewhere").exists()


# --- the output folder is the unit of a run -------------------------------------------------------

RUN = ["--runs", "dyck*", "--in-process", "--order", "helm"]  # 20 requests, no worker


@pytest.fixture(scope="module")
def finished(demo_submission, cache_dir, tmp_path_factory) -> tuple[Path, Path]:
    """(submission, output folder) of a finished real run, on its own copy of the demo submission
    (copytree keeps modification times: the copy has the same fingerprint)."""
    tmp = tmp_path_factory.mktemp("finished")
    sub = tmp / "submission"
    shutil.copytree(demo_submission, sub)
    out = tmp / "out"
    res = runner.invoke(app, ["run", str(sub), "--out", str(out), "--cache-dir", str(cache_dir), *RUN])
    assert res.exit_code == 0, res.output
    return sub, out


def as_killed(src: Path, dst: Path, keep: int, torn: bool = False) -> Path:
    """A copy of the finished run in `src` as a kill -9 leaves it after `keep` journaled results
    (and, with `torn`, in the middle of writing the next batch): no results.json, no scored HELM
    run folders."""
    shutil.copytree(src, dst)
    journal = dst / "journal.jsonl"
    lines = journal.read_text().splitlines(keepends=True)
    cut = [i for i, line in enumerate(lines) if line.startswith('{"kind": "result"')][keep - 1] + 1
    journal.write_text("".join(lines[:cut]) + (lines[cut][:57] if torn else ""))
    (dst / "results.json").unlink()
    shutil.rmtree(dst / "helm" / "runs")
    return dst


def files(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def error_line(res) -> str:
    """The one error line (HELM logs to stdout too); no traceback."""
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output, res.output
    (line,) = [x for x in res.output.splitlines() if x.startswith("error:")]
    return line


@pytest.mark.parametrize("given", ["absolute", "relative"])
def test_resume_continues_the_folder_as_given_after_it_was_moved(finished, tmp_path, monkeypatch, given):
    """The run's folder is copied (from where its run_config.json was written) to tmp/a, cut as a
    kill leaves it, renamed to tmp/b: --resume tmp/b (or `b` from tmp) finishes it there, writes
    nothing outside it, and neither tmp/a nor the original folder is written to. The relative
    case also reads an older run_config.json, which stored options.out (that path is ignored)."""
    _, done = finished
    original = files(done)
    a = as_killed(done, tmp_path / "a", keep=7)
    if given == "relative":
        config = json.loads((a / "run_config.json").read_text())
        del config["version"]
        config["options"].update(out=str(a), resume=False)
        (a / "run_config.json").write_text(json.dumps(config))
    b = tmp_path / "b"
    os.rename(a, b)
    if given == "relative":
        monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["run", "--resume", "b" if given == "relative" else str(b)])
    assert res.exit_code == 0, res.output
    results = json.loads((b / "results.json").read_text())
    assert results["budget"]["resumed_results"] == 7 and results["totals"]["answered"] == 20
    assert results["budget"]["journal"] == "journal.jsonl" and results["helm_output"] == "helm"
    assert all((b / r["helm_run_dir"]).is_dir() for r in results["runs"])
    assert scores(b) == scores(done)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # tmp/a did not reappear, nothing else here
    assert files(done) == original


def test_a_new_run_into_a_folder_with_a_journal_is_refused_unless_overwrite(finished, cache_dir, tmp_path):
    sub, done = finished
    out = as_killed(done, tmp_path / "out", keep=5)
    before = {name: (out / name).read_bytes() for name in ("journal.jsonl", "run_config.json")}
    start = ["run", str(sub), "--out", str(out), "--cache-dir", str(cache_dir), *RUN]
    line = error_line(runner.invoke(app, start))
    assert line == (f"error: {out} holds the journal of an earlier run (5 results): use --resume {out} to continue it,"
                    " or --overwrite to start again"), line
    assert {name: (out / name).read_bytes() for name in before} == before  # nothing emptied, nothing rewritten

    res = runner.invoke(app, start + ["--overwrite"])
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    assert results["budget"]["resumed_results"] == 0 and results["totals"]["answered"] == 20
    recs = [json.loads(x) for x in (out / "journal.jsonl").read_text().splitlines()]
    assert recs[0]["kind"] == "header" and sum(r["kind"] == "result" for r in recs) == 20  # a new journal
    assert sum(r["kind"] == "header" for r in recs) == 1


def test_the_plan_digest_covers_every_request_field():
    """top_p and seed were left out once: a field added to GenerationRequest is covered without a change."""
    base = GenerationRequest(id="r#0", prompt="p", stop_sequences=("\n",), origin=Origin("s", "r", "i0", 0))
    other = {"id": "r#1", "prompt": "q", "max_tokens": 7, "stop_sequences": ("###",), "temperature": 0.7, "top_p": 0.9,
             "num_completions": 2, "top_k_per_token": 5, "echo_prompt": True, "seed": 3, "origin": Origin("s", "r", "i1", 0)}
    assert set(other) == {f.name for f in dataclasses.fields(GenerationRequest) if f.compare}
    digest = plan_digest([base])
    for name, value in other.items():
        assert plan_digest([dataclasses.replace(base, **{name: value})]) != digest, name
    # the plan's token ids are not the request's identity (the fingerprint covers the tokenizer)
    assert plan_digest([dataclasses.replace(base, prompt_token_ids=(1, 2, 3))]) == digest


def test_resume_refuses_a_changed_submission_naming_what_changed(finished, tmp_path):
    """The submission moved (run_config.json pointed at the copy) and then changed: a file's time,
    then the manifest. Each refused in one line before anything runs; the journal untouched."""
    sub, done = finished
    out = as_killed(done, tmp_path / "out", keep=5)
    moved = tmp_path / "submission"
    shutil.copytree(sub, moved)
    config = json.loads((out / "run_config.json").read_text())
    config["submission"] = str(moved)
    (out / "run_config.json").write_text(json.dumps(config))
    journal = (out / "journal.jsonl").read_bytes()

    weights = moved / "adapter" / "adapter_model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    line = error_line(runner.invoke(app, ["run", "--resume", str(out)]))
    assert "journal.jsonl:1: field 'fingerprint': the submission changed since the run started:" \
           " adapter/adapter_model.safetensors (size or time); restore it, or start a new --out" in line, line

    manifest = moved / "effbench.toml"
    manifest.write_text(manifest.read_text() + "# edited\n")
    line = error_line(runner.invoke(app, ["run", "--resume", str(out)]))
    assert "the submission changed since the run started: effbench.toml (content), adapter/adapter_model.safetensors" in line, line
    assert (out / "journal.jsonl").read_bytes() == journal and not (out / "results.json").exists()

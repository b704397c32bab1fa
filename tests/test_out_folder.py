"""`effbench run --out` that cannot be written: a file, a read-only folder, a full disk. One line,
exit 2, saying which, and where a journal exists that it keeps what was done and how to go on.

Tests run as root, where chmod does not stop writes: read-only and full are real tmpfs mounts
(read-only, and tiny). Where mounting is not permitted, those tests are skipped."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from effbench.cli import app

runner = CliRunner()
RUNS = "synthetic_reasoning:mode=induction*"  # 20 requests; its journal (~90 kB) and run folder (~350 kB) overflow 64 kB


@contextmanager
def tmpfs(path: Path, options: str):
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("no mount command: a read-only or full --out needs a tmpfs mount (chmod does not stop root)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here ({r.stderr.strip()}): a read-only or full --out needs one")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


def used_kib(path: Path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize // 1024


def error_line(res) -> str:
    """The one error line (HELM logs to stdout too); no traceback."""
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output, res.output
    (line,) = [x for x in res.output.splitlines() if x.startswith("error:")]
    return line


def journaled(out: Path) -> int:
    """Results in the journal; every line must be whole JSON (a failed write leaves no torn line)."""
    recs = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    assert recs[0]["kind"] == "header"
    return sum(r["kind"] == "result" for r in recs)


def resume(out: Path):
    return runner.invoke(app, ["run", "--resume", str(out)])


def test_out_is_a_file(demo_submission, cache_dir, tmp_path):
    file = tmp_path / "results"
    file.write_text("not a folder")
    for out in (file, file / "sub"):
        res = runner.invoke(app, ["run", str(demo_submission), "--out", str(out), "--cache-dir", str(cache_dir)])
        line = error_line(res)
        assert f"{file}: is a file, not a folder" in line and "give another --out" in line, line
    assert file.read_text() == "not a folder"
    out = tmp_path / "out"  # a file where effbench makes a folder inside --out
    (out / "helm").mkdir(parents=True)
    (out / "helm" / "prod_env").write_text("in the way")
    res = runner.invoke(app, ["run", str(demo_submission), "--out", str(out), "--cache-dir", str(cache_dir), "--in-process"])
    assert f"{out}/helm/prod_env: is a file, not a folder, in the way of the output folder {out}" in error_line(res)


def test_out_is_read_only(demo_submission, cache_dir, tmp_path):
    with tmpfs(tmp_path / "ro", "size=1m,ro") as ro:
        res = runner.invoke(app, ["run", str(demo_submission), "--out", str(ro), "--cache-dir", str(cache_dir)])
        line = error_line(res)
        assert "read-only folder (Read-only file system) writing run_config.json" in line, line
        res = runner.invoke(app, ["run", str(demo_submission), "--out", str(ro / "new"), "--cache-dir", str(cache_dir)])
        assert "read-only folder (Read-only file system) creating it" in error_line(res)


@pytest.mark.slow
def test_full_disk_at_each_write_keeps_the_journal_and_resume_finishes(demo_submission, cache_dir, tmp_path):
    """A disk that fills up while the journal is written, while HELM writes its run folders, and
    while results.json is written; then a read-only one on resume. Each time: one line, the
    journal whole, and once there is space `--resume` finishes the run."""
    with tmpfs(tmp_path / "out", "size=64k") as out:
        # 1. during execution: a journal append fails (cut back off: the journal stays whole lines)
        res = runner.invoke(app, ["run", str(demo_submission), "--out", str(out), "--cache-dir", str(cache_dir),
                                  "--runs", RUNS, "--in-process", "--order", "helm"])
        line = error_line(res)
        assert "no space left on device writing journal.jsonl" in line, line
        n = journaled(out)
        assert n < 20
        if n:
            assert f"the journal {out}/journal.jsonl keeps the {n} results computed so far: free space and run" \
                   f" `effbench run --resume {out}`" in line, line
        else:
            assert "free space and run again" in line, line
        assert not (out / "results.json").exists()

        remount(out, "size=64m")
        assert resume(out).exit_code == 0
        assert journaled(out) == 20
        reference = json.loads((out / "results.json").read_text())["runs"]

        # 2. while HELM writes its run folder (an error without a file name, from write())
        (out / "results.json").unlink()
        for state in out.glob("helm/runs/*/*/scenario_state.json"):
            shutil.rmtree(state.parent)
        remount(out, f"size={used_kib(out) + 4}k")
        line = error_line(resume(out))
        assert f"{out}: no space left on device" in line and "keeps the 20 results computed so far" in line, line
        assert journaled(out) == 20 and not (out / "results.json").exists()

        # 3. writing results.json: HELM's folders are rewritten in place, results.json does not fit
        remount(out, "size=64m")
        assert resume(out).exit_code == 0
        (out / "results.json").unlink()
        remount(out, f"size={used_kib(out) + 4}k")
        line = error_line(resume(out))
        assert "no space left on device writing results.json" in line and "keeps the 20 results" in line, line
        assert journaled(out) == 20
        assert not (out / "results.json").exists() and not [p for p in out.iterdir() if p.name.endswith(".tmp")]

        # 4. a read-only folder on resume: stopped before the journal is appended to
        remount(out, "ro")
        before = (out / "journal.jsonl").read_bytes()
        line = error_line(resume(out))
        assert "read-only folder (Read-only file system)" in line and "keeps the 20 results" in line, line
        assert "make it writable and run `effbench run --resume" in line, line
        assert (out / "journal.jsonl").read_bytes() == before

        remount(out, "rw,size=64m")
        assert resume(out).exit_code == 0
        runs = json.loads((out / "results.json").read_text())["runs"]
        assert [r["metrics"] for r in runs] == [r["metrics"] for r in reference]

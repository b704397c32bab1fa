"""Every file effbench writes whole goes through effbench.atomic: whole or absent, never half a
file; a failed write leaves the old file and no temporary file behind."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import effbench
from effbench.atomic import atomic_open, write_json_atomic, write_text_atomic
from effbench.cli import app

runner = CliRunner()
PACKAGE = Path(effbench.__file__).parent
# Whole-file writes that do not go through effbench.atomic, and why.
NOT_ATOMIC = {
    "demo.py": "builds a new submission folder, which is not used before build_demo returns",
    "backends/fault.py": "the test-only fault backend's own state (EFFBENCH_TESTING), not an output",
}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_no_whole_file_write_outside_the_helper():
    """A new write_text / json.dump / open(..., "w") in effbench/ must use effbench.atomic (or be listed above)."""
    pattern = re.compile(r"\.write_text\(|\.write_bytes\(|json\.dump\(|(?<!atomic_)open\([^)]*[\"']w[b+]?[\"']")
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(PACKAGE))
        if rel in ("atomic.py", *NOT_ATOMIC):
            continue
        found += [f"{rel}:{i}: {line.strip()}" for i, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert found == []


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "results.json"
    write_json_atomic(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # as open(path, "w") would create it
    with pytest.raises(TypeError):
        write_json_atomic(path, {"a": object()})  # not JSON: nothing written
    with pytest.raises(RuntimeError):
        with atomic_open(path) as f:
            f.write('{"a": 2')
            raise RuntimeError("killed mid-write")
    assert json.loads(path.read_text()) == {"a": 1} and leftovers(tmp_path) == []
    (tmp_path / "dir").mkdir()
    with pytest.raises(IsADirectoryError) as e:
        write_text_atomic(tmp_path / "dir", "x")  # os.replace onto a folder fails
    assert e.value.filename == str(tmp_path / "dir") and leftovers(tmp_path) == []  # names the file meant


def test_a_real_run_and_its_reports_are_written_whole(demo_submission, cache_dir, tmp_path):
    """A real run; results.json is replaced (a new inode), not rewritten in place, by a resume;
    report.html likewise; a --json that cannot be written is one line, the old file kept."""
    out = tmp_path / "out"
    args = ["run", str(demo_submission), "--out", str(out), "--cache-dir", str(cache_dir), "--runs", "dyck*", "--in-process"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    inode = (out / "results.json").stat().st_ino
    results = json.loads((out / "results.json").read_text())
    results["budget"]["stopped"] = "interrupted by SIGINT"  # as a stop leaves it: a resume has something to do
    (out / "results.json").write_text(json.dumps(results))
    inode = (out / "results.json").stat().st_ino
    res = runner.invoke(app, ["run", "--resume", str(out)])  # nothing left to run: scores and writes again
    assert res.exit_code == 0, res.output
    assert (out / "results.json").stat().st_ino != inode
    inodes = []
    for _ in range(2):
        res = runner.invoke(app, ["report", str(out), "--html"])
        assert res.exit_code == 0, res.output
        inodes.append((out / "report.html").stat().st_ino)
    assert inodes[0] != inodes[1] and leftovers(out) == []

    ranking = tmp_path / "ranking.json"
    res = runner.invoke(app, ["rank", str(out), "--json", str(ranking)])
    assert res.exit_code == 0, res.output
    before = ranking.read_bytes()
    (tmp_path / "taken").mkdir()
    res = runner.invoke(app, ["rank", str(out), "--json", str(tmp_path / "taken")])
    assert res.exit_code == 2 and f"{tmp_path / 'taken'}: cannot write the ranking" in res.output, res.output
    assert ranking.read_bytes() == before and leftovers(tmp_path) == []

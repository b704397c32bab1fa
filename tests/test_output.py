"""What a person sees (issue 18): the verdict first, a row per scenario group unless --verbose,
short run names, no HELM noise on stdout, lines within a 120-column console; and the inputs that
are refused before anything loads."""

from __future__ import annotations

import json
import os
import subprocess
import time
import sys

import pytest
from rich.console import Console
from typer.testing import CliRunner

from effbench.cli import app
from effbench.cli.check import print_check
from effbench.report.summary import print_summary, short_name

runner = CliRunner()
EFFBENCH = [sys.executable, "-m", "effbench.cli"]


@pytest.fixture(scope="module")
def run_and_check(demo_submission, cache_dir, tmp_path_factory):
    """A real `effbench run` and `effbench check` of the demo (2 instances per run), as subprocesses
    whose stdout is kept."""
    tmp = tmp_path_factory.mktemp("output")
    run = subprocess.run([*EFFBENCH, "run", str(demo_submission), "--max-eval-instances", "2", "--out", str(tmp / "run"),
                          "--cache-dir", str(cache_dir)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "kernels-community" not in run.stderr  # bitsandbytes' import-time note, filtered by its text (effbench/quiet.py)
    check = subprocess.run([*EFFBENCH, "check", str(demo_submission), "--suite", "default", "--max-eval-instances", "2",
                            "--out", str(tmp / "check"), "--cache-dir", str(cache_dir)], capture_output=True, text=True, timeout=600)
    assert check.returncode in (0, 1, 2), check.stderr[-3000:]
    return tmp / "run", run.stdout, tmp / "check", check.stdout


def test_short_names_drop_the_model_only():
    assert short_name("dyck_language_np=2:model=effbench_demo") == "dyck_language_np=2"
    assert short_name("mmlu:subject=philosophy,method=multiple_choice_joint,model=effbench_x,data_augmentation=canonical") == \
        "mmlu:subject=philosophy,method=multiple_choice_joint,data_augmentation=canonical"
    assert short_name("gsm:model=m,stop=hash") == "gsm:stop=hash"


def test_run_summary_is_per_group_unless_verbose_and_fits_120_columns(run_and_check):
    out, stdout, _, _ = run_and_check
    results = json.loads((out / "results.json").read_text())
    groups = sorted({r["scenario"] for r in results["runs"]})
    for verbose in (False, True):
        console = Console(width=120, record=True)
        print_summary(results, console, verbose)
        text = console.export_text()
        assert all(len(line.rstrip()) < 120 for line in text.splitlines()), text  # nothing cropped at the edge
        rows = [ln.split("│")[1].strip() for ln in text.splitlines() if ln.startswith("│") and "total" not in ln]
        if verbose:  # a row per run, the name shortened with an ellipsis where the console is narrow
            assert len(rows) == len(results["runs"]) and all(short_name(r["name"]).startswith(row.rstrip("…"))
                                                            for row, r in zip(rows, results["runs"])), text
        else:
            assert sorted(rows) == groups, text
        assert "suite score" in text
    assert "Looking in path" not in stdout and "model=effbench_" not in stdout
    assert "the demo's model has random weights: its scores are 0 by design" in stdout
    assert "synthetic_reasoning:mode=pattern_match" not in stdout  # the default summary is per group


def test_the_summary_says_when_others_took_the_cores_during_execute(run_and_check):
    """results.json's execute phase carries steal and other processes' cores; above check's
    contended share the summary says the figures ran under that load, below it says nothing."""
    from effbench.report.summary import shared_cores_line

    results = json.loads((run_and_check[0] / "results.json").read_text())
    ex = results["profile"]["phases"]["execute"]
    assert 0 <= ex["steal_share"] < 1 and ex["other_cores"] >= 0
    ex.update(steal_share=0.01, other_cores=0.1)
    assert shared_cores_line(results) is None
    ex.update(steal_share=0.19, other_cores=0.3)
    line = shared_cores_line(results)
    n = results["environment"]["cpu_policy"]["cores"]
    assert line.startswith(f"execute shared its cores: others took {(0.3 + 0.19 * n) / n:.0%} of this process's {n} cores"), line
    assert "steal 19% of their time, other processes 0.30 cores' worth" in line
    console = Console(width=120, record=True)
    print_summary(results, console)
    assert line in " ".join(console.export_text().split())  # wrapped at the console's width


def test_check_prints_its_verdict_first_then_groups(run_and_check):
    _, _, chk, stdout = run_and_check
    report = json.loads((chk / "check.json").read_text())
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    assert lines[0].startswith(report["verdict"] + ":"), stdout  # nothing above the verdict (HELM's noise included)
    assert "Looking in path" not in stdout
    assert not any(short_name(r["name"]) in stdout for r in report["runs"]), stdout
    for verbose in (False, True):
        console = Console(width=120, record=True)
        print_check(report, "demo", verbose, console)
        text = console.export_text()
        assert text.startswith(report["verdict"]) and all(len(line) <= 120 for line in text.splitlines()), text
        assert ("pattern_match" in text) == verbose


def test_a_verdict_on_an_incomplete_suite_names_what_was_left_out(run_and_check):
    _, _, chk, _ = run_and_check
    report = json.loads((chk / "check.json").read_text())
    report["not_run"] = {"gsm:model=effbench_demo": "dataset gsm is missing its train split"}
    console = Console(width=120, record=True)
    print_check(report, "demo", False, console)
    lines = console.export_text().splitlines()
    n = len(report["runs"])
    assert lines[0].startswith(f"{report['verdict']} on {n} of {n + 1} runs:")
    table = next(i for i, ln in enumerate(lines) if ln.startswith("demo on default"))
    assert f"1 of {n + 1} runs not run: gsm (dataset gsm is missing its train split)" in lines[:table]  # next to the verdict


@pytest.mark.parametrize("budget", ["0s", "-5m", "0", "nan"])
def test_a_budget_of_zero_or_less_is_refused_before_anything_loads(demo_submission, tmp_path, budget):
    res = runner.invoke(app, ["run", str(demo_submission), "--budget", budget, "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "--budget" in res.output and "none for no deadline" in res.output, res.output
    assert not (tmp_path / "o").exists()  # refused before the output folder, the plan or the model


def test_resume_of_a_finished_run_says_so_and_loads_nothing(run_and_check):
    out = run_and_check[0]
    before = (out / "results.json").stat()
    res = runner.invoke(app, ["run", "--resume", str(out)])
    assert res.exit_code == 0 and "this run has finished" in res.output, res.output
    after = (out / "results.json").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # nothing re-scored or rewritten


def test_demo_is_named_after_its_folder(tmp_path):
    res = runner.invoke(app, ["demo", str(tmp_path / "my-sub"), "--train-steps", "0"])
    assert res.exit_code == 0, res.output
    assert 'name = "my-sub"' in (tmp_path / "my-sub" / "effbench.toml").read_text()


@pytest.mark.parametrize("argv, message", [
    (["run", "{sub}", "--runs", "nomatch*"], "--runs: pattern 'nomatch*' matches no run of suite default"),
    (["check", "{sub}", "--suite", "default", "--track", "3090"], "--track: unknown hardware profile '3090'"),
    (["run", "{sub}", "--budget", "-5m"], "--budget: '-5m' must be more than 0"),
    (["run", "{sub}", "--order", "fastest"], "Invalid value for '--order'"),
    (["fleet", "{sub}", "--runs", "nomatch*", "--dry-run"], "--runs: pattern 'nomatch*' matches no run"),
])
def test_bad_options_are_refused_before_any_work(demo_submission, tmp_path, argv, message):
    """One line, a non-zero exit, and no worker, plan or output folder: the process never got
    that far (its whole wall time is the interpreter's start and the option check)."""
    argv = [a.replace("{sub}", str(demo_submission)) for a in argv] + ["--out", str(tmp_path / "o")]
    proc = subprocess.run([*EFFBENCH, *argv], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode in (2, 3), proc.stderr  # check's own code for "could not run" is 3 (2 is FAIL)
    assert message in " ".join(proc.stderr.split()), proc.stderr
    assert not (tmp_path / "o").exists() and not list(tmp_path.iterdir())
    assert "Loading weights" not in proc.stderr and "phase: plan" not in proc.stderr


def test_the_tour_s_folders_exist_as_written(tmp_path, monkeypatch, cache_dir):
    """README's tour: `effbench demo my-sub`, `effbench run my-sub` (twice: the second does not
    replace the first), then effbench-out/my-sub-default/latest is the newest run."""
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(app, ["demo", "my-sub"]).exit_code == 0
    for _ in range(2):
        res = runner.invoke(app, ["run", "my-sub", "--runs", "dyck*", "--max-eval-instances", "1", "--cache-dir", str(cache_dir)])
        assert res.exit_code == 0, res.output
        time.sleep(1.1)  # the folder's name is the second it started
    runs = sorted(p for p in (tmp_path / "effbench-out" / "my-sub-default").iterdir() if p.name != "latest")
    assert len(runs) == 2 and all((p / "results.json").is_file() for p in runs)
    latest = tmp_path / "effbench-out" / "my-sub-default" / "latest"
    assert latest.is_symlink() and latest.resolve() == runs[-1].resolve()
    res = runner.invoke(app, ["report", "effbench-out/my-sub-default/latest"])
    assert res.exit_code == 0 and "my-sub on default" in res.output, res.output


def test_offline_without_data_is_one_line_naming_data_dir(demo_submission, tmp_path):
    """No network (a proxy nobody listens on makes it so on any machine) and no --data-dir: one
    line that says --data-dir and the folders it reads, no traceback."""
    import os

    suite = tmp_path / "s.toml"
    suite.write_text('name = "s"\nbudget_minutes = 10\n[[runs]]\nentry = "mmlu:subject=anatomy,method=multiple_choice_joint"\n')
    env = {**os.environ, "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9",
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    proc = subprocess.run([*EFFBENCH, "run", str(demo_submission), "--suite", str(suite), "--max-eval-instances", "1",
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "HELM cannot download its data" in err[0] and "--data-dir" in err[0], proc.stderr[-3000:]
    assert "folders under it: mmlu" in err[0] and "Traceback" not in proc.stderr


def test_library_messages_go_to_the_log_and_effbench_s_own_stay_on_the_terminal(tmp_path, capfd, caplog):
    """Within libraries_logged_to: HELM's logger, transformers' (its own stderr handler set aside)
    and warnings raised in third-party code land in the file; effbench's own warnings do not; on
    exit the libraries print as before. None (-v) routes nothing."""
    import logging
    import warnings

    from transformers.utils import logging as tf_logging

    import effbench.execute.journal as ours
    from effbench.quiet import libraries_logged_to

    log = tmp_path / "libraries.log"
    with libraries_logged_to(log):
        logging.getLogger("helm").warning("only 0 training instances, wanted 3")
        tf_logging.get_logger("transformers.tokenization_utils_base").warning("Token indices sequence length is longer")
        warnings.warn_explicit("a library's deprecation", FutureWarning, "/site-packages/somelib/x.py", 1)
        with pytest.warns(UserWarning, match="torn last journal line"):  # effbench's: shown as usual
            warnings.warn_explicit("torn last journal line", UserWarning, ours.__file__, 1)
    text, err = log.read_text(), capfd.readouterr().err
    assert "only 0 training instances" in text and "Token indices" in text and "a library's deprecation" in text, text
    assert "torn" not in text
    assert not any(m in err for m in ("only 0 training", "Token indices", "deprecation")), err
    tf_logging.get_logger("transformers.tokenization_utils_base").warning("after the command")
    root = logging.getLogger("transformers")  # its stderr handler is back, ours gone
    assert tf_logging._default_handler in root.handlers and not any(isinstance(h, logging.FileHandler) for h in root.handlers)
    assert "after the command" not in log.read_text()
    with libraries_logged_to(None) as none:  # -v: HELM's record goes where logging sends it (pytest's capture here)
        logging.getLogger("helm").warning("chatty")
    assert none is None and "chatty" in caplog.text and not log.read_text().count("chatty")


def test_helm_s_warnings_go_to_libraries_log_unless_verbose(demo_submission, cache_dir, shared_data, tmp_path):
    """A real run whose HELM adapter warns (8 shots wanted, MMLU's dev split has 5): quiet, the
    warning is in OUT/libraries.log, named at the end, not on the terminal; -v shows it."""
    suite = tmp_path / "s.toml"
    suite.write_text('name = "s"\nbudget_minutes = 10\n[[runs]]\n'
                     'entry = "mmlu:subject=anatomy,method=multiple_choice_joint,max_train_instances=8"\n')
    said = {}
    for flags in ([], ["-v"]):
        out = tmp_path / ("verbose" if flags else "quiet")
        proc = subprocess.run([*EFFBENCH, "run", str(demo_submission), "--suite", str(suite), "--max-eval-instances", "2",
                               "--data-dir", str(shared_data), "--cache-dir", str(cache_dir), "--out", str(out), *flags],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        said[bool(flags)] = (proc.stderr, out / "libraries.log")
    err, log = said[False]
    assert "only 5 training instances, wanted 8" in log.read_text()
    assert "training instances" not in err, err[-3000:]
    assert f"the libraries' messages (HELM, transformers, ...): {log}" in " ".join(err.split())
    err, log = said[True]
    assert "only 5 training instances, wanted 8" in err and not log.exists(), err[-3000:]


def test_a_log_folder_that_cannot_be_written_leaves_the_loggers_as_they_were(tmp_path, monkeypatch):
    """A full or read-only output folder fails the routing before any logger is touched: the next
    command (here, the next test) does not inherit a handler on a dead file (CI caught one)."""
    import logging

    from effbench.quiet import LOG_ENV, route_libraries

    monkeypatch.delenv(LOG_ENV, raising=False)
    monkeypatch.delenv("VLLM_LOGGING_CONFIG_PATH", raising=False)
    (tmp_path / "a-file").write_text("")
    before = {n: (list(logging.getLogger(n).handlers), logging.getLogger(n).propagate) for n in ("helm", "transformers")}
    with pytest.raises(NotADirectoryError):
        route_libraries(tmp_path / "a-file" / "libraries.log")
    assert {n: (list(logging.getLogger(n).handlers), logging.getLogger(n).propagate) for n in before} == before
    assert LOG_ENV not in os.environ and "VLLM_LOGGING_CONFIG_PATH" not in os.environ

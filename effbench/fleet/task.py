"""What one fleet task does, wherever Ray runs it: exactly `effbench run` (save_run_config, then
runner.run_suite: the same worker process, budget, journal and results.json) in the submission's
folder under FLEET_OUT. A retry (a crashed worker, a lost node) finds the journal there and
resumes it, losing only the requests that were in flight. Nothing here imports Ray."""

from __future__ import annotations

import os
import time
from pathlib import Path

from effbench.contracts import EffbenchError
from effbench.execute.journal import JOURNAL_NAME
from effbench.fleet.layout import RUN_FOLDER, read_state, write_state


def _own_priority() -> int:
    """The default priority for this process and the backend worker it starts: Ray runs its workers
    at niceness 15 (RAY_worker_niceness), where any other busy process takes the cores and the
    budget runs out for nothing. Raising a priority needs the privilege to (root, CAP_SYS_NICE);
    without it the niceness stays, and is recorded in the state for `fleet status` to show."""
    now = os.getpriority(os.PRIO_PROCESS, 0)
    if now > 0:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, 0)
        except PermissionError:
            return now
    return os.getpriority(os.PRIO_PROCESS, 0)


def outcome_state(results: dict) -> tuple[str, str | None]:
    """finished, or partial with why: the deadline, a stop, or runs that did not end."""
    t, b = results["totals"], results["budget"]
    if b["deadline_hit"] or b["stopped"] or t["unfinished"] or t["unanswered"]:
        why = "deadline hit" if b["deadline_hit"] else (b["stopped"] or "runs left unfinished")
        return "partial", f"{why}: {t['answered']} of {t['answered'] + t['unanswered']} requests answered"
    return "finished", None


def evaluate(folder: str, suite: str, sub_out: str, options: dict, trust: dict, node: str | None = None) -> dict:
    """One submission (or one shard) as `effbench run`: a new run in SUB_OUT/run, or a --resume of
    it where a journal is there. Returns the state written; a bad submission or plan ends as
    `failed` with its one-line reason (not retried: it would fail again)."""
    from effbench.challenge.suites import load_suite
    from effbench.execute.cpu import set_wait_policy
    from effbench.quiet import LIBRARY_LOG, libraries_logged_to, quiet_known_messages
    from effbench.plan import RunOptions
    from effbench.results import RUN_CONFIG, save_run_config
    from effbench.runner import resumed_run, run_suite
    from effbench.submission import Submission

    set_wait_policy()  # as the command line does, before anything here loads torch
    quiet_known_messages()
    niceness = _own_priority()
    where = Path(sub_out)
    out = where / RUN_FOLDER
    attempts = read_state(where).get("attempts", 0) + 1
    write_state(where, "running", attempts=attempts, node=node, host=os.uname().nodename, pid=os.getpid(),
                started=time.time(), ended=None, reason=None, niceness=niceness)
    try:
        if (out / JOURNAL_NAME).is_file() and (out / RUN_CONFIG).is_file():
            sub, suite, opts = resumed_run(out)  # an earlier attempt's results are kept
        else:
            sub = Submission.load(Path(folder), **trust)
            opts = RunOptions.from_json({**options, "out": str(out)})
            save_run_config(opts, sub, suite)
        with libraries_logged_to(opts.out / LIBRARY_LOG):  # as `effbench run` without -v
            outcome = run_suite(sub, load_suite(suite), opts)
    except EffbenchError as e:
        return write_state(where, "failed", reason=str(e))
    except BaseException as e:  # recorded, then raised: Ray reports it to the driver
        write_state(where, "failed", reason=f"{type(e).__name__}: {e}".splitlines()[0])
        raise
    state, why = outcome_state(outcome.results)
    return write_state(where, state, reason=why, ended=time.time(),
                       results=str(outcome.results_path.relative_to(where)),
                       suite_score=outcome.results["totals"]["suite_score"])

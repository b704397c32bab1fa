"""The `effbench` command line (typer + rich): the app, and its commands registered in the order
--help lists them. Each command lives with its group (run, check, report, tools); what they
share is in common.py. Errors an user can fix print one line, exit 2."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from effbench import __version__
from effbench.cli import check, fleet, report, run, tools
from effbench.execute.cpu import set_wait_policy
from effbench.quiet import quiet_known_messages

app = typer.Typer(
    help="Time-limited evaluation of fine-tuned LLMs (base model + LoRA) with HELM scenarios.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"effbench {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
) -> None:
    """effbench evaluates a submission folder against a suite of HELM run entries."""
    set_wait_policy()  # before any command loads torch: HELM's scoring in this process must not spin
    quiet_known_messages()


app.command()(tools.demo)
app.command()(run.run)
app.command()(tools.suites)
app.command()(tools.rank)
app.command()(tools.contamination)
app.command()(check.check)
app.command()(fleet.fleet)
app.command()(tools.serve)
app.command()(report.report)
app.command()(report.simulate)
app.command()(tools.kernels)
app.command("bench-compare")(report.bench_compare)


def console() -> None:
    """The `effbench` console script and `python -m effbench.cli`: the app, then an exit without
    the interpreter's teardown. With torch, transformers and HELM loaded, freeing every module
    takes ~1 s of each command's wall time (measured on 2 cores) and does nothing a finished
    command needs: the atexit handlers still run (logging's flush, multiprocessing's reaping of
    children) and the standard streams are flushed first. Where the app raises anything but
    SystemExit (a KeyboardInterrupt after a signal), Python's own exit path runs unchanged."""
    import atexit
    import os
    import sys

    try:
        app(prog_name="effbench")
        code = 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:  # SystemExit("message"): what Python does with it
            print(e.code, file=sys.stderr)
            code = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

"""The `effbench` command line (typer + rich): the app, and its commands registered in the order
--help lists them. Each command lives with its group (run, check, report, tools); what they
share is in common.py. Errors an user can fix print one line, exit 2."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from effbench import __version__
from effbench.cli import check, report, run, tools
from effbench.execute.cpu import set_wait_policy

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


app.command()(tools.demo)
app.command()(run.run)
app.command()(tools.suites)
app.command()(tools.rank)
app.command()(tools.contamination)
app.command()(check.check)
app.command()(tools.serve)
app.command()(report.report)
app.command()(report.simulate)
app.command()(tools.kernels)
app.command("bench-compare")(report.bench_compare)

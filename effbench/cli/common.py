"""What every command shares: the two consoles (progress and errors on stderr, results on
stdout), the one-line error exit, --json outputs written whole, durations such as 300m, and the
trust options only the command line can give."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from effbench.contracts import EffbenchError

console = Console(stderr=True)  # progress and errors
# Results on stdout; not a terminal (a log, CI): wide enough that the summary table does not fold.
out_console = Console(width=None if sys.stdout.isatty() else 200)


def fail(e: EffbenchError) -> None:
    """An error the user can fix: one line on stderr, exit 2."""
    console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


# The command line alone may widen what a submission is allowed (its manifest cannot): README,
# "Submissions are untrusted".
AllowPickle = Annotated[bool, typer.Option("--allow-pickle", help="Load *.bin/*.pt weights (pickle: runs code). Only for trusted submissions.")]
TrustRemoteCode = Annotated[bool, typer.Option("--trust-remote-code", help="Run the submission's own model and tokenizer code (auto_map, *.py). Only for trusted submissions.")]
AllowOutsidePaths = Annotated[bool, typer.Option("--allow-outside-paths", help="Let base, adapter and tokenizer (and links in their folders) point outside the submission folder.")]


def name_library_log(log: Path | None) -> None:
    """At the end of a command that routed the libraries' messages: where they are, if any came."""
    if log is not None and log.is_file() and log.stat().st_size:
        n = sum(1 for _ in log.open(encoding="utf-8", errors="replace"))
        console.print(f"the libraries' messages (HELM, transformers, ...): {log} ({n} lines; -v shows them here)",
                      highlight=False, soft_wrap=True)


def write_json_out(path: Path, obj: dict, exit_code: int = 2) -> None:
    """A --json output, whole or not at all (effbench.atomic); a failure is one line and `exit_code`."""
    from effbench.atomic import write_json_atomic

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, obj, default=str)
    except OSError as e:
        console.print(f"[bold red]error:[/] {escape(f'{path}: cannot write the JSON output ({e.strerror or e}) (option --json)')}",
                      highlight=False, soft_wrap=True)
        raise typer.Exit(exit_code) from None


def duration_minutes(text: str | None, option: str = "--budget") -> float | None:
    """'300m', '90s', '2h', or a bare number of minutes; 'none' (or 'off') for no deadline, as 0.
    Zero or a negative duration is an error, not a silent "no deadline"."""
    if text is None:
        return None
    t = text.strip().lower()
    if t in ("none", "off"):
        return 0.0
    scale = {"s": 1 / 60, "m": 1.0, "h": 60.0}.get(t[-1:], None)
    try:
        minutes = float(t[:-1]) * scale if scale is not None else float(t)
    except ValueError:
        raise EffbenchError(f"{option}: {text!r} is not a duration (e.g. 300m, 90s, 2h; a bare number is minutes;"
                            " none for no deadline)") from None
    if not minutes > 0:  # also NaN
        raise EffbenchError(f"{option}: {text!r} must be more than 0 (none for no deadline)")
    return minutes

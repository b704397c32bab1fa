"""Whole-file writes that are whole or absent: every file effbench writes in one piece goes
through here (results.json, run_config.json, check.json, report.html, the --json outputs, the
hardware-profile cache, a staged dataset file). The journal, appended to line by line, does not.

The content goes to a temporary file in the same folder, then os.replace puts it in place in one
step: a reader (`effbench report` during a run, a CI job) or a kill mid-write sees the old file
or the new one, never half of one, and no half-written file is taken for a finished one later.
No fsync: what this guards against is a killed process, whose writes the page cache keeps; power
loss is not the failure this is for (as for the journal).
"""

from __future__ import annotations

import json
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


@contextmanager
def atomic_open(path: Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """A file to write `path`'s new content into ("w" or "wb"); it replaces `path` when the block
    ends without an exception. The folder must exist. A failure leaves `path` as it was and no
    temporary file behind; an OSError names `path` (not the temporary file), so that the
    caller's message is about the file it meant to write."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = None
    try:
        # created as open(path, "w") would be (mode 0o666 less the umask), not mkstemp's 0o600
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
        os.replace(tmp, path)
    except BaseException as e:
        if fd is not None:  # only then is there one to remove (an unlink of none fails on a read-only file system)
            tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno is not None:
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def write_text_atomic(path: Path, text: str, encoding: str = "utf-8") -> None:
    with atomic_open(path, "w", encoding) as f:
        f.write(text)


def write_json_atomic(path: Path, obj, *, default=None, ensure_ascii: bool = True) -> None:
    """`obj` as indented JSON (serialized first: an object that is not JSON fails before anything
    is written)."""
    write_text_atomic(path, json.dumps(obj, indent=2, default=default, ensure_ascii=ensure_ascii) + "\n")

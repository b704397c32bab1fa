"""Paths from untrusted input: the one function that turns a name into a file name, and the one
check that a submission's path stays inside its folder.

Suite names come from suite files and run names from HELM's run entries; both end up as folder
names under `--out`. A name with `/`, `..` or control characters must never reach a path join.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from effbench.contracts import EffbenchError

_UNSAFE = re.compile(r"[/\\\x00-\x1f\x7f]")
_MAX_BYTES = 200  # under the 255 bytes a Linux file name may have, leaving room for suffixes


def safe_name(name: str) -> str:
    """`name` as one path component: separators and control characters become `_`, `.` and `..`
    get a `_` in front, and an over-long name is cut with a hash of the whole so two long names
    stay apart. A name that is already safe (HELM's `mmlu:subject=x,method=y`) is unchanged."""
    out = _UNSAFE.sub("_", name)
    if out in ("", ".", ".."):
        out = "_" + out
    raw = out.encode("utf-8", "surrogateescape")
    if len(raw) > _MAX_BYTES:
        digest = hashlib.sha256(raw).hexdigest()[:12]
        out = raw[: _MAX_BYTES - 13].decode("utf-8", "ignore") + "-" + digest
    return out


def resolved(path: Path, what: str) -> Path:
    """`path` with every symlink followed; a symlink loop is one line naming `what`."""
    try:
        return path.resolve(strict=False)
    except (RuntimeError, OSError) as e:  # 3.11 raises RuntimeError on a loop, 3.13 OSError (ELOOP)
        raise EffbenchError(f"{path}: symlink loop or unreadable link ({e}) ({what})") from None


def inside(path: Path, root: Path, label: str, allow_outside: bool) -> Path:
    """`path` resolved, refused unless it stays inside `root` (resolved) or the user allowed
    outside paths on the command line (--allow-outside-paths). `label` starts the message: the
    manifest and its field."""
    real = resolved(path, label)
    if allow_outside or real == root or real.is_relative_to(root):
        return real
    raise EffbenchError(f"{label}: {path} resolves to {real}, outside the submission folder {root};"
                        " pass --allow-outside-paths if you trust this submission")


def default_cache_dir() -> Path:
    """Where effbench keeps what it can compute again (merged weights, HELM instances, checks
    passed): $EFFBENCH_CACHE, else ~/.cache/effbench."""
    return Path(os.environ.get("EFFBENCH_CACHE", Path.home() / ".cache" / "effbench"))

"""Backends, one file each; the only registry of their names. Heavy imports happen on make()."""

from __future__ import annotations

import importlib
from pathlib import Path

from effbench.contracts import Backend
from effbench.submission import Submission

# name -> "module:Class"; the manifest's `backend` field is checked against these keys.
BACKENDS: dict[str, str] = {
    "hf": "effbench.backends.hf:HFBackend",
}


def make_backend(submission: Submission, *, name: str | None = None, cache_dir: Path | None = None) -> Backend:
    name = name or submission.manifest.backend
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)(submission, cache_dir=cache_dir)

"""Backends, one file each; the only registry of their names. Heavy imports happen on make()."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from effbench.contracts import Backend, EffbenchError

if TYPE_CHECKING:  # submission.py reads the registry: no import back at run time
    from effbench.submission import Submission

# name -> "module:Class"; the manifest's `backend` field is checked against these keys.
BACKENDS: dict[str, str] = {
    "hf": "effbench.backends.hf:HFBackend",
    "vllm": "effbench.backends.vllm:VLLMBackend",
    "http": "effbench.backends.http:HTTPBackend",  # any server of the challenge's API
}
# Test-only backends: hf with injected delays, hangs and crashes. Selectable only where the test
# suite set EFFBENCH_TESTING=1 (tests/conftest.py), never from a submission's manifest alone.
TEST_BACKENDS: dict[str, str] = {"fault": "effbench.backends.fault:FaultBackend"}


def available_backends() -> dict[str, str]:
    return {**BACKENDS, **TEST_BACKENDS} if os.environ.get("EFFBENCH_TESTING") == "1" else BACKENDS


def make_backend(submission: Submission, *, name: str | None = None, cache_dir: Path | None = None) -> Backend:
    name = name or submission.manifest.backend
    module, cls = available_backends()[name].split(":")
    args = submission.manifest.backend_args
    try:
        return getattr(importlib.import_module(module), cls)(submission, cache_dir=cache_dir, **args)
    except TypeError as e:
        if "unexpected keyword argument" not in str(e):
            raise
        raise EffbenchError(f"{submission.manifest_path}: field 'backend_args': {e} (backend {name})") from None

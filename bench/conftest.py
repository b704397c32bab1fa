"""Benchmark fixtures: a ~100M-parameter random Llama + LoRA submission, built once per session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def m100_submission(tmp_path_factory):
    from effbench.demo import build_demo

    # hidden 768, 12 layers, 12 heads (head_dim 64), MLP 2048, vocab padded to 8192: ~98M parameters.
    return build_demo(
        tmp_path_factory.mktemp("m100") / "submission",
        hidden_size=768, num_layers=12, num_heads=12, intermediate_size=2048, model_vocab_size=8192,
        name="m100", max_batch_size=8,
    )


@pytest.fixture(scope="session")
def m100_backend(m100_submission, tmp_path_factory):
    from effbench.backends.hf import HFBackend
    from effbench.submission import Submission

    be = HFBackend(Submission.load(m100_submission), cache_dir=tmp_path_factory.mktemp("cache"))
    be.start()
    yield be
    be.close()

"""Benchmark fixtures: a ~100M-parameter random Llama + LoRA submission, built once per session."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

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


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def english_corpus(data: Path = SHARED):
    """Lines of real English for a realistic tokenizer: MMLU's dev and val questions (its test
    split, the one evaluated, stays out) and GSM8K's train split."""
    for split in ("dev", "val"):
        for f in sorted((data / "mmlu" / split).glob("*.csv")):
            with f.open(newline="") as fh:
                yield from (" ".join(row[:-1]) for row in csv.reader(fh))
    with (data / "gsm8k" / "train.jsonl").open() as fh:
        for line in fh:
            d = json.loads(line)
            yield d["question"]
            yield d["answer"]


@pytest.fixture(scope="session")
def m100_16k_submission(tmp_path_factory):
    """The ~100M Llama with a 16k-token BPE trained on real English (~97.5M parameters): MMLU
    prompts of ~450 tokens, as real tokenizers give, where the byte-ish demo tokenizer gives ~900."""
    from effbench.demo import build_demo

    if not (SHARED / "mmlu" / "dev").is_dir() or not (SHARED / "gsm8k" / "train.jsonl").is_file():
        pytest.skip(f"real MMLU dev/val and GSM8K train not found under {SHARED} (the tokenizer's corpus)")
    return build_demo(
        tmp_path_factory.mktemp("m100-16k") / "submission",
        hidden_size=768, num_layers=12, num_heads=12, intermediate_size=2048, vocab_size=16384,
        name="m100-16k", max_batch_size=16, corpus=english_corpus(),
    )

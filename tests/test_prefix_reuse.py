"""Shared-prefix KV reuse in the HF backend, on real HELM prompts (MMLU, BIG-bench few-shot)
planned from ../shared/data: with reuse on, the same tokens, logprobs (1e-4) and finish reasons
as with it off, and far fewer tokens run through the model. GSM8K is not here: ../shared/data
lacks its train split, which HELM draws the in-context examples from."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest
import torch

from effbench.contracts import EffbenchError, GenerationRequest, GenerationResult

SUITE = """name = "prefix-reuse"
budget_minutes = 10
max_eval_instances = 10
[[runs]]
entry = "mmlu:subject=philosophy"
[[runs]]
entry = "big_bench:max_train_instances=big_bench_few_shot_setting,task=auto_debugging,subtask="
"""
TOL = 1e-4


@pytest.fixture(scope="module")
def runs(demo_submission, cache_dir, shared_data, tmp_path_factory) -> dict[str, list[GenerationRequest]]:
    """The suite's requests as effbench plans them, by HELM run: 'mmlu', and 'bb0'..'bb3' for
    BIG-bench auto_debugging with 0..3 in-context examples."""
    from effbench.challenge.helm_bridge import HelmSession
    from effbench.plan import Progress, RunOptions, plan_suite
    from effbench.submission import Submission
    from effbench.challenge.suites import load_suite

    tmp = tmp_path_factory.mktemp("prefix-reuse")
    (tmp / "suite.toml").write_text(SUITE)
    suite = load_suite(str(tmp / "suite.toml"))
    opts = RunOptions(out=tmp / "out", data_dir=shared_data, cache_dir=cache_dir)
    plan = plan_suite(Submission.load(demo_submission), suite, opts, HelmSession(opts.out / "helm", suite.name, parallelism=1), Progress())
    out: dict[str, list[GenerationRequest]] = {}
    for r in plan.requests(suite.name):
        key = "mmlu" if r.origin.run.startswith("mmlu") else "bb" + r.origin.run.split("max_train_instances=")[1][0]
        out.setdefault(key, []).append(r)
    assert sorted(out) == ["bb0", "bb1", "bb2", "bb3", "mmlu"] and all(len(v) == 10 for v in out.values())
    return out


@pytest.fixture
def hf(hf_backend):
    """The session's backend with an empty prefix cache and fresh counters; reuse on and the
    cache's bound as it was again afterwards."""
    hf_backend.prefix_cache.clear()
    hf_backend.prefix_stats = {k: 0 for k in hf_backend.prefix_stats}
    chunk, bound, cascade = hf_backend.prefill_chunk_tokens, hf_backend.prefix_cache.bound_bytes, hf_backend.cascade
    yield hf_backend
    hf_backend.prefill_chunk_tokens = chunk
    hf_backend.cascade = cascade
    hf_backend.prefix_reuse = True
    hf_backend.prefix_cache.bound_bytes = bound
    hf_backend.prefix_cache.clear()


def generate(backend, reqs: list[GenerationRequest], reuse: bool, batch_size: int = 8) -> list[GenerationResult]:
    backend.prefix_reuse = reuse
    try:
        return [res for i in range(0, len(reqs), batch_size) for res in backend.generate(reqs[i : i + batch_size])]
    finally:
        backend.prefix_reuse = True


def assert_same(plain: list[GenerationResult], reused: list[GenerationResult]) -> None:
    """Same tokens, finish reasons and texts; logprobs and top-k alternatives within TOL."""
    assert len(plain) == len(reused)
    for a, b in zip(plain, reused):
        assert a.ok and b.ok, (a.error, b.error)
        assert (a.request_id, a.prompt_tokens, a.output_tokens) == (b.request_id, b.prompt_tokens, b.output_tokens)
        assert len(a.completions) == len(b.completions)
        for ca, cb in zip(a.completions, b.completions):
            assert [t.token_id for t in ca.tokens] == [t.token_id for t in cb.tokens], a.request_id
            assert (ca.text, ca.finish_reason) == (cb.text, cb.finish_reason)
            for ta, tb in zip(ca.tokens, cb.tokens):
                assert abs(ta.logprob - tb.logprob) < TOL
                assert [t for t, _ in ta.top_logprobs] == [t for t, _ in tb.top_logprobs]
                assert all(abs(x - y) < TOL for (_, x), (_, y) in zip(ta.top_logprobs, tb.top_logprobs))


def computed_share(results: list[GenerationResult]) -> float:
    return sum(r.computed_tokens - r.output_tokens for r in results) / sum(r.prompt_tokens for r in results)


def test_mmlu_scoring_requests(hf, runs):
    reqs = runs["mmlu"]
    assert reqs[0].max_tokens == 1 and reqs[0].top_k_per_token > 1 and not reqs[0].echo_prompt  # as HELM builds them
    plain = generate(hf, reqs, reuse=False)
    reused = generate(hf, reqs, reuse=True)
    assert_same(plain, reused)
    assert all(t.top_logprobs for res in reused for c in res.completions for t in c.tokens)
    # Batch 1 computes the run's prefix once, batch 2 reuses it: no prefix token computed twice.
    s = hf.prefix_stats
    assert (s["misses"], s["hits"], s["plain"]) == (1, 1, 0)
    prefix = s["computed_prefix_tokens"]
    assert prefix > 0.6 * min(r.prompt_tokens for r in reused)  # HELM's instructions + 5 examples
    assert s["reused_tokens"] == len(reqs) * prefix - prefix
    first, second = reused[:8], reused[8:]
    assert computed_share(first) < 0.4 and computed_share(second) < 0.4
    # The prefix is charged to the first request of the batch that computed it, and only there.
    assert first[0].computed_tokens - first[0].output_tokens == first[0].prompt_tokens
    assert all(r.computed_tokens < r.prompt_tokens for r in reused[1:])
    assert sum(r.computed_tokens for r in reused) == sum(r.prompt_tokens + r.output_tokens for r in plain) - s["reused_tokens"]
    assert [r.computed_tokens for r in plain] == [r.prompt_tokens + r.output_tokens for r in plain]


def bigbench(runs, shots: str, **kw) -> list[GenerationRequest]:
    """BIG-bench few-shot prompts, with a shorter budget and stop sequences that some rows hit."""
    return [replace(r, max_tokens=24, stop_sequences=("\n", ".", "=="), **kw) for k in shots for r in runs[f"bb{k}"]]


def test_bigbench_greedy_generation_with_stop_sequences(hf, runs):
    reqs = bigbench(runs, "123")
    plain = generate(hf, reqs, reuse=False)
    reused = generate(hf, reqs, reuse=True)
    assert_same(plain, reused)
    reasons = {c.finish_reason for r in reused for c in r.completions}
    assert "stop" in reasons and reasons - {"stop"}  # some rows stopped early, others ran on
    s = hf.prefix_stats
    assert s["hits"] > 0 and s["plain"] == 0
    assert computed_share(reused) < 0.6 * computed_share(plain)


def test_sampled_generation_with_seeds(hf, runs):
    reqs = [replace(r, seed=i) for i, r in enumerate(bigbench(runs, "12", temperature=0.7, top_p=0.95))]
    reqs += [replace(r, max_tokens=16, temperature=0.7, seed=i) for i, r in enumerate(runs["mmlu"])]
    plain = generate(hf, reqs, reuse=False)
    reused = generate(hf, reqs, reuse=True)
    assert_same(plain, reused)
    assert len({tuple(t.token_id for t in r.completions[0].tokens) for r in reused}) > len(reqs) // 2
    assert hf.prefix_stats["hits"] >= 1 and hf.prefix_stats["misses"] >= 2  # batches cross runs here: some plain


def test_several_completions_per_request(hf, runs):
    reqs = [replace(r, num_completions=3, temperature=0.7, seed=i) for i, r in enumerate(bigbench(runs, "2"))]
    reqs[1] = replace(reqs[1], temperature=0.0)  # a greedy row among sampled ones
    reqs[2] = replace(reqs[2], max_tokens=0)  # and one that decodes nothing
    plain = generate(hf, reqs, reuse=False, batch_size=5)
    reused = generate(hf, reqs, reuse=True, batch_size=5)
    assert_same(plain, reused)
    assert all(len(r.completions) == 3 for r in reused)
    assert len({tuple(t.token_id for t in c.tokens) for c in reused[0].completions}) > 1
    assert hf.prefix_stats["misses"] >= 1 and hf.prefix_stats["plain"] == 0


def test_batches_without_a_shared_prefix_fall_back(hf, runs):
    mixed = [runs["mmlu"][0], runs["bb2"][0], runs["mmlu"][1], runs["bb3"][1]]  # two runs in one batch
    zero_shot = runs["bb0"][:8]  # 0-shot prompts share a few tokens only
    reqs = [replace(r, max_tokens=8, top_k_per_token=3) for r in mixed + zero_shot]
    plain = generate(hf, reqs, reuse=False, batch_size=len(mixed))
    reused = generate(hf, reqs, reuse=True, batch_size=len(mixed))
    assert_same(plain, reused)
    assert hf.prefix_stats == {**hf.prefix_stats, "hits": 0, "misses": 0, "plain": 3}
    assert [r.computed_tokens for r in reused] == [r.computed_tokens for r in plain]


def test_echo_keeps_the_plain_path(hf, runs):
    reqs = [replace(r, echo_prompt=True, max_tokens=0, top_k_per_token=1) for r in runs["mmlu"][:3]]
    plain = generate(hf, reqs, reuse=False)
    reused = generate(hf, reqs, reuse=True)
    assert_same(plain, reused)
    assert len(reused[0].completions[0].tokens) > 100  # the prompt's tokens, with their logprobs
    assert sum(hf.prefix_stats.values()) == 0


def test_a_longer_stored_prefix_is_cropped_and_never_written(hf, runs):
    mmlu = [replace(r, max_tokens=6, top_k_per_token=5) for r in runs["mmlu"]]
    (one,) = hf.generate(mmlu[:1])  # a batch of one: stores all of its prompt but the last token
    ((key, entry),) = hf.prefix_cache.items()
    assert len(key) == one.prompt_tokens - 1 and entry[0][0].shape[2] == len(key)
    snapshot = [(k.clone(), v.clone()) for k, v in entry]
    plain = generate(hf, mmlu[1:9], reuse=False)
    computed_before = hf.prefix_stats["computed_prefix_tokens"]
    reused = generate(hf, mmlu[1:9], reuse=True)  # shares only the run's prefix with the entry: a crop
    again = generate(hf, mmlu[1:9], reuse=True)
    assert_same(plain, reused)
    assert_same(reused, again)
    assert [[t.logprob for c in r.completions for t in c.tokens] for r in reused] == \
        [[t.logprob for c in r.completions for t in c.tokens] for r in again]  # bit for bit: same cache, same math
    s = hf.prefix_stats
    assert (s["misses"], s["hits"], s["computed_prefix_tokens"]) == (1, 2, computed_before)
    assert all(torch.equal(k, k0) and torch.equal(v, v0) for (k, v), (k0, v0) in zip(entry, snapshot))
    assert len(hf.prefix_cache) == 1  # a crop stores nothing new


def test_lru_evicts_and_extends(hf, runs):
    mmlu = [replace(r, max_tokens=2) for r in runs["mmlu"]]
    bb3 = bigbench(runs, "3")[:4]
    # the two runs' prefix entries, each sized by its tensors' bytes
    generate(hf, mmlu[:4], reuse=True)
    one = hf.prefix_stats["bytes"]
    generate(hf, bb3, reuse=True)
    two = hf.prefix_stats["bytes"] - one
    assert one > 0 and two > 0 and hf.prefix_stats["entries"] == 2
    # A bound that holds either entry but not both: each store evicts the other.
    hf.prefix_cache.clear()
    hf.prefix_stats = {k: 0 for k in hf.prefix_stats}
    hf.prefix_cache.bound_bytes = max(one, two)
    generate(hf, mmlu[:4], reuse=True)
    generate(hf, bb3, reuse=True)  # evicts the MMLU entry
    generate(hf, mmlu[4:8], reuse=True)
    s = hf.prefix_stats
    assert (s["misses"], s["hits"], s["extended"], s["evicted"], len(hf.prefix_cache)) == (3, 0, 0, 2, 1)
    assert (s["entries"], s["bytes"]) == (1, one) == (len(hf.prefix_cache), hf.prefix_cache.held_bytes)
    # A batch sharing much more than a stored entry holds: the entry gives its part, only the rest
    # is computed (once), and stored as a second entry. Here: one MMLU prompt twice.
    hf.prefix_cache.bound_bytes = 1 << 40
    (run_prefix,) = hf.prefix_cache
    twice = [mmlu[0], replace(mmlu[0], id="again", temperature=0.7, seed=1)]
    plain = generate(hf, twice, reuse=False)
    before = dict(hf.prefix_stats)
    reused = generate(hf, twice, reuse=True)
    assert_same(plain, reused)
    s = hf.prefix_stats
    assert (s["hits"], s["extended"]) == (before["hits"] + 1, before["extended"] + 1)
    extension = s["computed_prefix_tokens"] - before["computed_prefix_tokens"]
    assert extension == reused[0].prompt_tokens - 1 - len(run_prefix) > 0
    assert reused[0].computed_tokens - reused[0].output_tokens == 1 + extension
    assert reused[1].computed_tokens - reused[1].output_tokens == 1
    assert len(hf.prefix_cache) == 2


@pytest.mark.parametrize("bound", [0, 1024])
def test_a_bound_too_small_for_an_entry_shares_within_the_batch_only(hf, runs, bound):
    """0 bytes, or fewer than one entry needs: nothing is kept, a batch's rows still share its prefix."""
    hf.prefix_cache.bound_bytes = bound
    reqs = runs["mmlu"][:8]
    plain = generate(hf, reqs, reuse=False)
    reused = generate(hf, reqs, reuse=True)
    assert_same(plain, reused)
    assert not hf.prefix_cache and hf.prefix_stats["misses"] == 1
    assert (hf.prefix_stats["entries"], hf.prefix_stats["bytes"]) == (0, 0)
    assert computed_share(reused) < 0.4


def test_backend_args_reach_the_backend(demo_submission, tmp_path):
    from effbench.backends import make_backend
    from effbench.backends.options import HFOptions
    from effbench.submission import Submission

    def with_args(name: str, args: str) -> Submission:
        sub = tmp_path / name
        shutil.copytree(demo_submission, sub)
        (sub / "effbench.toml").write_text((sub / "effbench.toml").read_text() + "\n[backend_args]\n" + args)
        return Submission.load(sub)

    backend = make_backend(with_args("off", "prefix_reuse = false\nprefix_cache_bytes = 2000000\nprefill_chunk_tokens = 0\n"))
    assert (backend.prefix_reuse, backend.prefix_cache_bytes, backend.prefill_chunk_tokens) == (False, 2_000_000, 0)
    plain = make_backend(Submission.load(demo_submission))  # the defaults: HFOptions'
    assert (plain.prefix_reuse, plain.prefix_cache_bytes) == (HFOptions().prefix_reuse, HFOptions().prefix_cache_bytes) == (True, None)
    assert plain.prefill_chunk_tokens == (512 if plain.device == "cpu" else 0)
    # refused when the manifest is read, before any backend is made (tests/test_submission.py: each backend)
    with pytest.raises(EffbenchError, match=r"effbench.toml: field 'backend_args.prefix_cache_bytes': .*greater than or equal to 0"):
        with_args("bad", "prefix_cache_bytes = -1\n")
    with pytest.raises(EffbenchError, match=r"effbench.toml: field 'backend_args.prefix_reuse': Input should be a valid boolean"):
        with_args("bad2", 'prefix_reuse = "no"\n')


@pytest.mark.parametrize("reuse", [False, True])
def test_prefill_in_row_groups_equals_the_whole_batch_at_once(hf, runs, reuse):
    """Row groups cut to their own width (less padding), caches joined for decoding: the same
    tokens and logprobs as one forward pass over the whole batch."""
    reqs = bigbench(runs, "123") + [replace(r, max_tokens=3) for r in runs["mmlu"][:6]]
    hf.prefill_chunk_tokens = 0
    whole = generate(hf, reqs, reuse=reuse)
    hf.prefill_chunk_tokens = 300  # a row or two per forward pass, widths differ between groups
    grouped = generate(hf, reqs, reuse=reuse)
    assert_same(whole, grouped)
    assert any(len(r.completions[0].tokens) > 1 for r in grouped)  # decoding ran on the joined cache


@pytest.mark.parametrize("chunk", [150, 512])
def test_packed_suffixes_equal_rows_padded(hf, runs, chunk, monkeypatch):
    """On a shared prefix the suffixes of several rows run as ONE sequence with a block-diagonal
    causal mask (effbench/backends/hf_prefill.py): the same tokens, logprobs and finish reasons
    as the rows-with-padding way, through decoding (the packed KV unpacked into rows)."""
    from effbench.backends import hf_prefill

    reqs = bigbench(runs, "123") + [replace(r, max_tokens=3) for r in runs["mmlu"][:6]] + runs["mmlu"][6:]
    hf.prefill_chunk_tokens = chunk  # 150: about one suffix per piece; 512: several
    calls = []
    real_packed = hf_prefill._packed
    monkeypatch.setattr(hf_prefill, "_packed", lambda *a, **k: calls.append(1) or real_packed(*a, **k))
    packed = generate(hf, reqs, reuse=True)
    assert calls and hf_prefill.can_pack(hf.model, hf_prefill.Prefix([], 40, 0), False, chunk)
    monkeypatch.setattr(hf_prefill, "can_pack", lambda *a: False)
    hf.prefix_cache.clear()
    rows = generate(hf, reqs, reuse=True)
    assert_same(rows, packed)
    assert any(len(r.completions[0].tokens) > 1 for r in packed)  # decoding ran on the unpacked cache


@pytest.mark.parametrize("chunk", [0, 150, 512])
def test_cascade_decode_equals_per_row_caches(hf, runs, chunk, monkeypatch):
    """Cascade decoding (hf_cascade.py: the prefix's KV read once for all rows, the rows' caches
    without it) after each prefill way (whole batch, row groups, packed): the same tokens,
    logprobs and finish reasons as every row decoding on its own copy of the prefix, with rows
    stopping early, several completions per request and a sampled row among greedy ones."""
    from effbench.backends import hf_cascade

    assert hf.cascade  # on by default on a CPU, the model switched to effbench_sdpa
    assert hf.model.config._attn_implementation == hf_cascade.NAME
    reqs = bigbench(runs, "13") + [replace(r, max_tokens=5, num_completions=2, temperature=0.7, seed=i)
                                   for i, r in enumerate(runs["mmlu"][:4])]
    hf.prefill_chunk_tokens = chunk
    steps = []
    real_check = hf_cascade.check_calls
    monkeypatch.setattr(hf_cascade, "check_calls", lambda state, layers: steps.append(state["calls"]) or real_check(state, layers))
    cascaded = generate(hf, reqs, reuse=True)
    assert steps and set(steps) == {hf.model.config.num_hidden_layers}  # every layer read the prefix, every step
    hf.cascade, n = False, len(steps)
    hf.prefix_cache.clear()
    per_row = generate(hf, reqs, reuse=True)
    assert len(steps) == n  # off: no cascade step
    assert_same(per_row, cascaded)
    reasons = {c.finish_reason for r in cascaded for c in r.completions}
    assert "stop" in reasons and reasons - {"stop"}


def test_cascade_attention_equals_sdpa_over_the_whole_cache():
    """hf_cascade.cascade against SDPA over [prefix | suffix] per row: grouped-query heads, a
    multi-token causal query, a row whose suffix is all padding, float32 and bfloat16."""
    from effbench.backends.hf_cascade import cascade

    torch.manual_seed(0)
    B, Hq, Hkv, T, P, S, D = 3, 8, 2, 4, 40, 12, 16
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2)):
        q = torch.randn(B, T, Hq, D, dtype=dtype).transpose(1, 2)  # non-contiguous, as the model's
        pk, pv = torch.randn(Hkv, P, D, dtype=dtype), torch.randn(Hkv, P, D, dtype=dtype)
        sk, sv = torch.randn(B, Hkv, S, D, dtype=dtype), torch.randn(B, Hkv, S, D, dtype=dtype)
        valid = torch.zeros(B, S, dtype=torch.bool)
        valid[0, 3:], valid[1, :], valid[2, S - T:] = True, True, True  # row 2: only the query's own positions
        causal = torch.ones(T, S, dtype=torch.bool).tril(S - T)
        mask = valid[:, None, None, :] & causal[None, None]  # [B, 1, T, S]
        full_k = torch.cat([pk[None].expand(B, -1, -1, -1), sk], dim=2).repeat_interleave(Hq // Hkv, dim=1)
        full_v = torch.cat([pv[None].expand(B, -1, -1, -1), sv], dim=2).repeat_interleave(Hq // Hkv, dim=1)
        full_mask = torch.cat([torch.ones(B, 1, T, P, dtype=torch.bool), mask], dim=-1)
        want = torch.nn.functional.scaled_dot_product_attention(q.float(), full_k.float(), full_v.float(), attn_mask=full_mask)
        got = cascade(q, pk, pv, sk, sv, mask, None)
        assert got.shape == (B, T, Hq, D) and got.dtype == dtype
        assert torch.allclose(got.float(), want.transpose(1, 2), atol=tol), (dtype, (got.float() - want.transpose(1, 2)).abs().max())
        row2 = cascade(q[2:], pk, pv, sk[2:], sv[2:], torch.zeros_like(mask[2:]), None)  # suffix all masked: the prefix alone
        alone = torch.nn.functional.scaled_dot_product_attention(
            q[2:].float(), pk[None].float().repeat_interleave(Hq // Hkv, dim=1), pv[None].float().repeat_interleave(Hq // Hkv, dim=1))
        assert torch.allclose(row2.float(), alone.transpose(1, 2), atol=tol)


def test_cascade_refuses_a_model_that_bypasses_the_interface():
    """A forward pass that did not call the attention interface once per layer would have skipped
    the prefix: the step raises instead of returning wrong logits."""
    from effbench.backends import hf_cascade

    kv = [(torch.zeros(1, 1, 40, 4), torch.zeros(1, 1, 40, 4))]
    with hf_cascade.prefix_attention(kv, 40) as calls:
        pass  # no forward pass: no attention call
    with pytest.raises(RuntimeError, match=r"0 attention calls for 2 layers in one step .*cascade_decode = false"):
        hf_cascade.check_calls(calls, 2)
    assert hf_cascade._active is None  # plain SDPA again outside the block

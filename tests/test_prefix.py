"""The shared-prefix rule of effbench/execute/prefix.py and its three users: the HF backend's
cache bounded in bytes (on the real demo model), the memory fit that counts it, and the prompt
token ids the plan makes once and the backend runs."""

from __future__ import annotations

import pickle
from dataclasses import replace

import pytest

from effbench.contracts import GenerationRequest, Origin
from effbench.execute.prefix import (
    CHUNK_BATCHES,
    DEFAULT_FREE_FRACTION,
    MIN_SHARED_PREFIX,
    PrefixCache,
    PrefixGroup,
    chunked,
    common_prefix_length,
    default_cache_bytes,
    kv_bytes,
    prefix_groups,
    shared_length,
    tokens_kept,
)

SHARED = " ".join(f"word{i % 7} token{i % 5}" for i in range(40)) + "\n"  # well over MIN_SHARED_PREFIX tokens


def test_common_and_shared_prefix_lengths():
    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert common_prefix_length([[1, 2, 3]]) == 3
    assert common_prefix_length([[], [1]]) == 0 and common_prefix_length([]) == 0
    # every prompt keeps one token of its own: the last position's logits come from the suffix
    assert shared_length([[1, 2, 3], [1, 2, 3, 4]]) == 2
    assert shared_length([[1, 2, 3, 4]]) == 3
    assert shared_length([]) == 0


def test_groups_need_the_minimum_and_chunks_are_a_few_batches():
    reqs = [GenerationRequest(id=f"{run}#{i}", prompt="", origin=Origin(run=run, index=i)) for run in "ab" for i in range(3)]
    long, short = list(range(MIN_SHARED_PREFIX)), list(range(MIN_SHARED_PREFIX - 1))
    ids = {f"a#{i}": long + [100 + i] for i in range(3)} | {f"b#{i}": short + [100 + i] for i in range(3)}
    g = prefix_groups(reqs, ids)
    assert g["a#0"] == g["a#2"] and g["a#0"].tokens == MIN_SHARED_PREFIX and g["a#0"].key.startswith("prefix:")
    assert g["b#0"] == PrefixGroup("run:b", 0)  # one token short of the minimum: no prefix
    assert [len(c) for c in chunked(list(range(2 * CHUNK_BATCHES + 1)))] == [CHUNK_BATCHES, CHUNK_BATCHES, 1]
    # what an unbounded cache would keep: one entry per group with a prefix, one longest prompt more
    assert tokens_kept(g, {k: len(v) for k, v in ids.items()}) == MIN_SHARED_PREFIX + MIN_SHARED_PREFIX + 1
    assert tokens_kept({"b#0": g["b#0"]}, {"b#0": 40}) == 0


def test_cache_evicts_least_recently_used_until_an_entry_fits():
    c: PrefixCache[str, int] = PrefixCache(100)
    assert c.put("a", 1, 40) and c.put("b", 2, 40)
    assert c.get("a") == 1  # a is now the most recently used: b goes first
    assert c.put("c", 3, 50)
    assert list(c) == ["a", "c"] and c.held_bytes == 90 and c.evicted == 1
    assert c.put("d", 4, 100) and list(c) == ["d"] and c.held_bytes == 100  # evicts all it must
    assert not c.put("e", 5, 101) and list(c) == ["d"]  # bigger than the bound: not stored, nothing evicted
    zero: PrefixCache[str, int] = PrefixCache(0)
    assert not zero.put("a", 1, 1) and len(zero) == 0 and zero.held_bytes == 0
    assert default_cache_bytes(1000) == int(1000 * DEFAULT_FREE_FRACTION) and default_cache_bytes(-5) == 0


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_entry_bytes_are_a_real_tiny_llama_kv_cache(tmp_path, dtype):
    """kv_bytes on the shape memfit reads from config.json equals what a DynamicCache of a real
    model holds: grouped-query attention and a head_dim of its own (not hidden / heads)."""
    import torch
    from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

    from effbench.predict.memfit import DTYPE_BYTES, read_model_shape

    cfg = LlamaConfig(vocab_size=97, hidden_size=48, intermediate_size=64, num_hidden_layers=3, num_attention_heads=6,
                      num_key_value_heads=2, head_dim=16)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(getattr(torch, dtype)).eval()
    tokens = 40
    cache = DynamicCache()
    with torch.inference_mode():
        model(input_ids=torch.arange(tokens)[None] % 97, past_key_values=cache, use_cache=True)
    real = sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)
    cfg.save_pretrained(tmp_path)
    s = read_model_shape(tmp_path / "config.json")
    assert kv_bytes(s.num_layers, s.num_kv_heads, s.head_dim, DTYPE_BYTES[dtype], tokens) == real
    assert kv_bytes(s.num_layers, s.num_kv_heads, s.head_dim, DTYPE_BYTES[dtype]) * tokens == real


def test_memfit_counts_the_prefix_cache(tmp_path):
    from transformers import LlamaConfig

    from effbench.predict.hardware import DATASHEETS
    from effbench.predict.memfit import fit_model

    LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                num_attention_heads=32, num_key_value_heads=8).save_pretrained(tmp_path)
    card = DATASHEETS["4090"]
    kw = dict(dtype="float16", batch_size=4, seq_len=2048, param_count=7_000_000_000)
    none = fit_model(tmp_path / "config.json", card, **kw)
    per_token = 2 * 32 * 8 * 128 * 2
    assert none.prefix_cache_bytes == 0 and none.kv_bytes_per_token == per_token
    assert none.kv_cache_bytes == 4 * 2048 * per_token  # the batch's KV: the same bytes per token
    # the manifest's bound: counted whole when the suite's need is unknown, else what it needs at most
    bounded = fit_model(tmp_path / "config.json", card, prefix_cache_bytes=2 << 30, **kw)
    assert bounded.total_bytes - none.total_bytes == bounded.prefix_cache_bytes == 2 << 30
    assert bounded.max_batch_that_fits < none.max_batch_that_fits and "prefix cache 2.0" in bounded.summary()
    needed = fit_model(tmp_path / "config.json", card, prefix_cache_bytes=2 << 30, prefix_tokens=1000, **kw)
    assert needed.prefix_cache_bytes == 1000 * per_token and needed.prefix_bound_bytes == 2 << 30
    # the default: a share of what the weights and the runtime leave free on the card
    default = fit_model(tmp_path / "config.json", card, prefix_cache_bytes=None, **kw)
    free = card.memory_bytes - none.weights_bytes - none.runtime_bytes
    assert default.prefix_bound_bytes == default.prefix_cache_bytes == default_cache_bytes(free) > 0
    assert fit_model(tmp_path / "config.json", card, prefix_cache_bytes=None, prefix_tokens=0, **kw).prefix_cache_bytes == 0


@pytest.fixture
def hf(hf_backend):
    """The session's backend; its prefix cache and counters as they were afterwards."""
    bound, stats = hf_backend.prefix_cache.bound_bytes, dict(hf_backend.prefix_stats)
    hf_backend.prefix_cache.clear()
    yield hf_backend
    hf_backend.prefix_reuse = True
    hf_backend.prefix_cache.clear()
    hf_backend.prefix_cache.bound_bytes, hf_backend.prefix_stats = bound, stats


def test_hf_cache_is_bounded_in_bytes(hf):
    """Each entry is sized by its tensors, which are kv_bytes at its length on the model's config;
    a small bound evicts, 0 keeps nothing, and the counters say what is held."""
    cfg = hf.model.config
    per_token = kv_bytes(cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim, hf.model.dtype.itemsize)
    a = [GenerationRequest(id=f"a{i}", prompt=SHARED + f"question {i}?", max_tokens=2) for i in range(3)]
    b = [GenerationRequest(id=f"b{i}", prompt="other " + SHARED[: len(SHARED) // 2] + f" item {i}.", max_tokens=2)
         for i in range(3)]
    hf.prefix_cache.bound_bytes = 1 << 40
    hf.generate(a)
    ((key, entry),) = hf.prefix_cache.items()
    one = hf.prefix_cache.held_bytes
    assert one == len(key) * per_token == sum(k.nbytes + v.nbytes for k, v in entry)
    assert len(key) >= MIN_SHARED_PREFIX and (hf.prefix_stats["entries"], hf.prefix_stats["bytes"]) == (1, one)
    evicted = hf.prefix_stats["evicted"]
    hf.prefix_cache.bound_bytes = one  # room for either entry (b's is shorter), not both
    hf.generate(b)
    (kept,) = hf.prefix_cache
    assert MIN_SHARED_PREFIX <= len(kept) < len(key) and kept != key[: len(kept)]  # b's own entry
    assert hf.prefix_stats["evicted"] == evicted + 1 and hf.prefix_stats["entries"] == 1
    hf.prefix_cache.clear()
    hf.prefix_cache.bound_bytes = 0
    hf.generate(a)
    assert len(hf.prefix_cache) == 0 and hf.prefix_stats["bytes"] == 0


def test_plan_token_ids_are_what_the_backend_runs(hf, demo_submission, tmp_path):
    from effbench.backends.common import plan_ids_apply
    from effbench.plan import prompt_shapes
    from effbench.submission import Submission

    sub = Submission.load(demo_submission)
    reqs = [GenerationRequest(id=f"r{i}", prompt=SHARED + f"question {i}?", max_tokens=3,
                              origin=Origin(run="r", index=i)) for i in range(4)]
    tokenized, lengths, groups = prompt_shapes(sub, reqs)
    assert [r.prompt_token_ids is not None for r in tokenized] == [True] * 4
    assert tokenized == reqs  # the ids are not part of a request's identity (dedupe, journal)
    assert pickle.loads(pickle.dumps(tokenized[0])).prompt_token_ids == tokenized[0].prompt_token_ids  # to the worker
    assert groups["r0"].tokens >= MIN_SHARED_PREFIX
    assert hf.plan_ids  # the demo's merged folder holds the tokenizer folder's files
    out = hf.generate(tokenized)
    assert [r.prompt_tokens for r in out] == [lengths[r.id] for r in reqs] == [len(r.prompt_token_ids) for r in tokenized]
    # the ids are used as sent: those of another prompt answer as that prompt does
    other = tokenized[1].prompt_token_ids
    hf.prefix_reuse = False  # both whole: the same arithmetic, the same greedy tokens
    (swapped,) = hf.generate([replace(tokenized[0], id="swapped", prompt_token_ids=other)])
    (plain,) = hf.generate([replace(reqs[1], id="plain")])
    assert swapped.prompt_tokens == len(other) and swapped.completions[0].text == plain.completions[0].text
    # where the backend's tokenizer may differ from the plan's, it encodes the prompts itself
    model_dir = hf.model_dir
    assert plan_ids_apply(sub, model_dir) and plan_ids_apply(sub, sub.tokenizer_dir)
    unmerged = replace(sub, adapter_dir=None, tokenizer_dir=tmp_path / "tokenizer")
    assert not plan_ids_apply(unmerged, sub.base_dir) and not plan_ids_apply(replace(sub, tokenizer_dir=None), model_dir)

"""The HF backend on the real demo model: merge exactness, batching invariance, HELM's stop rule,
echo, top-k logprobs, sampling with seeds, errors as data."""

from __future__ import annotations

import shutil

import pytest
import torch

from effbench.contracts import GenerationRequest
from effbench.merge import merge_key, merged_model_dir
from effbench.submission import Submission

PROMPTS = [
    "the answer is",
    "Question: how many minutes are in the budget?\nAnswer:",
    "one two three four five six seven eight nine ten",
    "Explicit is better than implicit.",
    "a",
    "score time budget minute second token prompt output input run suite scenario metric exact match",
    "Errors should never pass silently. In the face of ambiguity,",
    "( ) [ ] { }",
]


def req(i, prompt, **kw) -> GenerationRequest:
    return GenerationRequest(id=str(i), prompt=prompt, **kw)


def ids_of(result):
    return [[t.token_id for t in c.tokens] for c in result.completions]


def test_merged_logits_equal_unmerged_peft(hf_backend, demo_submission):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(demo_submission / "base", dtype=torch.float32)
    enc = hf_backend.tokenizer(PROMPTS[:4], return_tensors="pt", padding=True)
    with torch.inference_mode():
        base_logits = base(**enc).logits
        unmerged = PeftModel.from_pretrained(base, demo_submission / "adapter").eval()
        peft_logits = unmerged(**enc).logits
        merged_logits = hf_backend.model(**enc).logits
    mask = enc["attention_mask"].bool()
    assert (merged_logits - peft_logits)[mask].abs().max().item() < 1e-4
    # ... and the adapter is not a no-op: merging really changed the model.
    assert (merged_logits - base_logits)[mask].abs().max().item() > 1e-2


def test_merge_cache_is_reused_and_keyed_on_content(hf_backend, demo_submission, cache_dir, tmp_path):
    sub = Submission.load(demo_submission)
    again, built = merged_model_dir(sub, "float32", cache_dir)
    assert again == hf_backend.model_dir and not built
    assert sorted(p.suffix for p in again.glob("*.safetensors")) == [".safetensors"]
    assert not list(again.glob("*.bin"))
    # A changed adapter or dtype gets another key.
    copy = tmp_path / "sub"
    shutil.copytree(demo_submission, copy)
    st = copy / "adapter" / "adapter_model.safetensors"
    data = bytearray(st.read_bytes())
    data[-1] ^= 0xFF
    st.write_bytes(bytes(data))
    assert merge_key(Submission.load(copy), "float32") != merge_key(sub, "float32")
    assert merge_key(sub, "bfloat16") != merge_key(sub, "float32")


def test_batched_greedy_equals_unbatched(hf_backend):
    reqs = [req(i, p, max_tokens=24) for i, p in enumerate(PROMPTS)]
    batched = hf_backend.generate(reqs)
    assert all(r.ok for r in batched)
    assert len({r.prompt_tokens for r in batched}) > 3  # really different lengths: padding matters
    for r, b in zip(reqs, batched):
        (single,) = hf_backend.generate([r])
        assert ids_of(single) == ids_of(b), r.prompt
        assert single.completions[0].text == b.completions[0].text


def test_greedy_logprobs_match_a_full_forward_pass(hf_backend):
    (res,) = hf_backend.generate([req(0, PROMPTS[1], max_tokens=12, top_k_per_token=3)])
    gen = [t.token_id for t in res.completions[0].tokens]
    prompt_ids = hf_backend.tokenizer.encode(PROMPTS[1])
    ids = torch.tensor([prompt_ids + gen])
    with torch.inference_mode():
        lps = torch.log_softmax(hf_backend.model(input_ids=ids).logits[0].float(), -1)
    for j, tok in enumerate(res.completions[0].tokens):
        pos = len(prompt_ids) + j - 1
        assert tok.logprob == pytest.approx(lps[pos, tok.token_id].item(), abs=1e-4)
        assert tok.token_id == lps[pos].argmax().item()  # greedy
        tops = [lp for _, lp in tok.top_logprobs]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True)
        assert max(tops) == pytest.approx(tok.logprob, abs=1e-6)
    assert res.completions[0].logprob == pytest.approx(sum(t.logprob for t in res.completions[0].tokens))


def test_stop_sequence_cuts_text_just_before_it(hf_backend):
    (free,) = hf_backend.generate([req(0, PROMPTS[2], max_tokens=30)])
    text = free.completions[0].text
    assert len(text) > 12
    stop = text[8:10]
    cut = text.index(stop)
    (stopped,) = hf_backend.generate([req(1, PROMPTS[2], max_tokens=30, stop_sequences=(stop,))])
    c = stopped.completions[0]
    assert c.text == text[:cut]
    assert c.finish_reason == "stop"
    assert "".join(t.text for t in c.tokens) == c.text
    assert c.logprob == pytest.approx(sum(t.logprob for t in c.tokens))
    assert stopped.output_tokens == len(c.tokens) < free.output_tokens
    # Several stop sequences: the earliest one in the text wins, whatever their order.
    later = text[cut + 4 : cut + 6]
    (both,) = hf_backend.generate([req(2, PROMPTS[2], max_tokens=30, stop_sequences=(later, stop))])
    assert both.completions[0].text == text[: min(text.index(later), cut)]


def test_max_tokens_and_length_finish(hf_backend):
    (r,) = hf_backend.generate([req(0, PROMPTS[0], max_tokens=3)])
    c = r.completions[0]
    assert len(c.tokens) <= 3 and r.output_tokens == len(c.tokens)
    assert c.finish_reason in ("length", "eos")
    (z,) = hf_backend.generate([req(1, PROMPTS[0], max_tokens=0)])
    assert z.ok and z.completions[0].text == "" and z.output_tokens == 0


def test_echo_prompt_returns_prompt_logprobs(hf_backend):
    prompt = PROMPTS[3]
    (r,) = hf_backend.generate([req(0, prompt, max_tokens=0, echo_prompt=True)])
    c = r.completions[0]
    assert c.text == prompt
    assert "".join(t.text for t in c.tokens) == prompt
    ids = hf_backend.tokenizer.encode(prompt)  # [BOS, ...]
    with torch.inference_mode():
        lps = torch.log_softmax(hf_backend.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    expected = [lps[j - 1, ids[j]].item() for j in range(1, len(ids))]
    assert [t.logprob for t in c.tokens] == pytest.approx(expected, abs=1e-4)
    # With generation too: the prompt, then exactly what a non-echo request generates.
    (plain,) = hf_backend.generate([req(1, prompt, max_tokens=8)])
    (echo,) = hf_backend.generate([req(2, prompt, max_tokens=8, echo_prompt=True)])
    assert echo.completions[0].text == prompt + plain.completions[0].text
    assert echo.output_tokens == plain.output_tokens


def test_sampling_is_seeded_per_request(hf_backend):
    kw = dict(max_tokens=16, temperature=1.0, num_completions=3, seed=7)
    (a,) = hf_backend.generate([req(0, PROMPTS[0], **kw)])
    assert len(a.completions) == 3
    assert len({c.text for c in a.completions}) > 1  # the n completions are different samples
    # Same seed: same samples, also when batched with other requests.
    others = [req(i + 1, p, max_tokens=5) for i, p in enumerate(PROMPTS[1:4])]
    b = hf_backend.generate(others + [req(9, PROMPTS[0], **kw)])[-1]
    assert ids_of(b) == ids_of(a)
    (c,) = hf_backend.generate([req(0, PROMPTS[0], **{**kw, "seed": 8})])
    assert ids_of(c) != ids_of(a)


def test_top_p_restricts_the_sample_to_the_nucleus(hf_backend):
    # top_p tiny: only the most likely token survives, so sampling equals greedy.
    (g,) = hf_backend.generate([req(0, PROMPTS[5], max_tokens=10)])
    (s,) = hf_backend.generate([req(1, PROMPTS[5], max_tokens=10, temperature=1.0, top_p=1e-6, seed=3)])
    assert ids_of(s) == ids_of(g)


def test_errors_are_data_and_do_not_spoil_the_batch(hf_backend):
    too_long = "budget " * 3000
    out = hf_backend.generate([req(0, PROMPTS[0], max_tokens=4), req(1, too_long, max_tokens=4), req(2, PROMPTS[1], max_tokens=4)])
    assert out[0].ok and out[2].ok
    assert not out[1].ok and "max_sequence_length" in out[1].error and out[1].completions == ()
    (alone,) = hf_backend.generate([req(0, PROMPTS[0], max_tokens=4)])
    assert ids_of(alone) == ids_of(out[0])


def test_tokenize_decode_roundtrip(hf_backend):
    text = "Errors should never pass silently: 1234 ( ) [ ]\n\nok"
    ids = hf_backend.tokenize(text)
    assert ids and all(isinstance(i, int) for i in ids)
    assert hf_backend.decode(ids) == text


@pytest.mark.parametrize("quant", ["bnb-8bit", "bnb-4bit"])
def test_bitsandbytes_quantized_load_generates(quant, demo_submission, cache_dir, tmp_path):
    pytest.importorskip("bitsandbytes")
    from effbench.backends.hf import HFBackend

    copy = tmp_path / "sub"
    shutil.copytree(demo_submission, copy)
    manifest = copy / "effbench.toml"
    manifest.write_text(manifest.read_text().replace('quantization = "none"', f'quantization = "{quant}"'))
    be = HFBackend(Submission.load(copy), cache_dir=cache_dir)
    be.start()
    try:
        linear = be.model.model.layers[0].self_attn.q_proj
        assert type(linear).__module__.startswith("bitsandbytes")
        (r,) = be.generate([req(0, PROMPTS[1], max_tokens=6, top_k_per_token=2)])
        assert r.ok and 0 < r.output_tokens <= 6
    finally:
        be.close()


def test_growing_layer_is_a_dynamic_layer_written_in_place():
    """hf_kv.GrowingLayer: the same keys/values as DynamicLayer's concatenation, step after step,
    past the room asked for, and after dropping rows; the steps within the room write in place."""
    import torch
    from transformers.cache_utils import DynamicLayer

    from effbench.backends.hf_kv import GrowingLayer, for_decoding
    from transformers import DynamicCache

    torch.manual_seed(0)
    k0, v0 = torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 4)
    plain = DynamicCache([(k0, v0)])
    grown = for_decoding(DynamicCache([(k0.clone(), v0.clone())]), steps=2)
    (layer,) = grown.layers
    assert isinstance(layer, GrowingLayer) and layer._k.shape[2] == 7
    buffer = layer._k.data_ptr()
    for step in range(4):  # 2 within the room, then 2 past it
        k, v = torch.randn(3, 2, 1, 4), torch.randn(3, 2, 1, 4)
        a, b = plain.update(k, v, 0), grown.update(k, v, 0)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert (layer._k.data_ptr() == buffer) == (step < 2)
        assert grown.get_seq_length() == plain.get_seq_length() == 6 + step
    keep = torch.tensor([2, 0])
    plain.batch_select_indices(keep)
    grown.batch_select_indices(keep)
    k, v = torch.randn(2, 2, 1, 4), torch.randn(2, 2, 1, 4)
    a, b = plain.update(k, v, 0), grown.update(k, v, 0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and type(plain.layers[0]) is DynamicLayer

"""The HF backend's prefill: a batch's prompts (or their suffixes, on a shared prefix) run through
the model once, giving each row's last logits and, when decoding follows, the KV cache the decode
loop continues from, every row laid out as [prefix P | left padding | its own tokens].

Two ways, both in pieces of at most `chunk_tokens` tokens (on a CPU a forward pass over ~512
tokens runs more tokens/s than one over a whole batch; README, "Backends"):

- rows: a few rows per forward pass, each group cut to its own longest row (some padding left);
- packed, on a shared prefix: the suffixes of several rows concatenated into ONE sequence with a
  block-diagonal causal mask (each suffix sees the prefix and its own earlier tokens, never
  another row's). No padding at all, and the prefix's KV is not copied per row. A suffix is ~100
  tokens on HELM's few-shot prompts: one row at a time, a CPU's matrix products run at ~2/3 of
  their speed on 500 tokens; packed, they run at full speed (1.25-1.6x on MMLU, README "Backends").
  Same logits as the rows way to float rounding. Needs a 4-D mask, which transformers passes
  through as given to SDPA attention; other attention implementations use the rows way.
"""

from __future__ import annotations

import torch

from effbench.backends import hf_cascade
from effbench.backends.hf_kv import Prefix, for_decoding, fresh_cache, join_caches, unpack_rows


def can_pack(model, prefix: Prefix | None, echo: bool, chunk_tokens: int) -> bool:
    """Packed prefill applies: suffixes on a prefix, logits of the last positions only, pieces
    (chunk_tokens > 0: the CPU's way) and SDPA attention (which takes the 4-D mask as given)."""
    return (prefix is not None and not echo and chunk_tokens > 0
            and getattr(model.config, "_attn_implementation", None) in ("sdpa", hf_cascade.NAME))


def prefill(model, input_ids, mask, positions, prefix: Prefix | None, echo: bool, steps: int, chunk_tokens: int,
            cascade: bool = False):
    """(logits [B, L or 1, V], KV cache) of the batch (suffixes on top of the prefix, if any).
    The cache, with room for `steps` decode steps per row written in place (hf_kv.GrowingLayer),
    is built only when decoding follows (steps > 0); a scoring batch needs none. With `cascade`
    (and a prefix) it holds the rows' own positions only: the decode reads the prefix from its entry."""
    B, L = input_ids.shape
    P = prefix.length if prefix else 0
    cascade = cascade and prefix is not None
    real = mask[:, P:].sum(dim=1).tolist()  # tokens of each row's own (suffix) part
    if can_pack(model, prefix, echo, chunk_tokens):
        return _packed(model, input_ids, positions, prefix, real, steps, chunk_tokens, cascade)
    if not chunk_tokens or B == 1:
        cache = fresh_cache(prefix, B)  # [B, H, P, D] per layer
        out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                    use_cache=True, logits_to_keep=0 if echo else 1)
        return out.logits, for_decoding(cache, steps, P if cascade else 0) if steps else fresh_cache()
    logits, parts = [], []
    for i, j in _pieces(real, chunk_tokens, padded=True):
        width = max(real[i:j])
        s = L - width  # columns before s are padding in every row of the group
        cache = fresh_cache(prefix, j - i)
        out = model(input_ids=input_ids[i:j, s:], attention_mask=torch.cat([mask[i:j, :P], mask[i:j, P + s:]], dim=1),
                    position_ids=positions[i:j, s:], past_key_values=cache, use_cache=True, logits_to_keep=0 if echo else 1)
        logits.append(torch.nn.functional.pad(out.logits, (0, 0, s, 0)) if echo else out.logits)  # echo: [rows, L, V]
        parts.append((cache, s))
    return torch.cat(logits), join_caches(parts, P, steps, cascade) if steps else fresh_cache()


def _pieces(real: list[int], chunk_tokens: int, padded: bool) -> list[tuple[int, int]]:
    """Consecutive row ranges [i, j) of at most chunk_tokens tokens each (at least one row):
    counted at the group's longest row when padded, as the rows' sum when packed."""
    out, i = [], 0
    while i < len(real):
        j, width, total = i + 1, real[i], real[i]
        while j < len(real) and (max(width, real[j]) * (j + 1 - i) if padded else total + real[j]) <= chunk_tokens:
            width, total = max(width, real[j]), total + real[j]
            j += 1
        out.append((i, j))
        i = j
    return out


def _packed(model, input_ids, positions, prefix: Prefix, real: list[int], steps: int, chunk_tokens: int, cascade: bool):
    B, L = input_ids.shape
    P, dev = prefix.length, input_ids.device
    logits, parts = [], []
    for i, j in _pieces(real, chunk_tokens, padded=False):
        lens = real[i:j]
        ids = torch.cat([input_ids[b, L - real[b]:] for b in range(i, j)])[None]  # [1, n]
        pos = torch.cat([positions[b, L - real[b]:] for b in range(i, j)])[None]
        n = ids.shape[1]
        seg = torch.repeat_interleave(torch.arange(j - i, device=dev), torch.tensor(lens, device=dev))
        own = (seg[:, None] == seg[None, :]) & torch.ones((n, n), dtype=torch.bool, device=dev).tril()
        allowed = torch.cat([torch.ones((n, P), dtype=torch.bool, device=dev), own], dim=1)[None, None]  # [1, 1, n, P+n]
        ends = torch.tensor(lens, device=dev).cumsum(0) - 1  # each row's last token in the packed sequence
        cache = fresh_cache(prefix, 1)
        out = model(input_ids=ids, attention_mask=allowed, position_ids=pos, past_key_values=cache, use_cache=True,
                    logits_to_keep=ends)
        logits.append(out.logits[0][:, None, :])  # [rows, 1, V]
        parts.append((cache, lens))
    return torch.cat(logits), unpack_rows(parts, P, L, steps, cascade) if steps else fresh_cache()

"""Cascade attention for the HF backend's decode loop (effbench/backends/hf.py): the batch's shared
prefix KV is read ONCE per step for all rows, instead of once per row from each row's own copy.

Why: on HELM's few-shot prompts ~80% of every row's context is the same prefix. Plain SDPA over
per-row caches reads that prefix R times per decode step; on a CPU at 16 rows of ~1000-token
GSM8K contexts that is about half of a step. Here each step attends the rows' queries to the
prefix in one matrix product (all rows' queries against one [H, P, D] block), to each row's own
suffix (padding, its prompt's tail, the tokens decoded so far) in another, then one softmax over
both: the same attention as over each row's whole cache, to float rounding.

How it plugs into transformers: the model runs with the attention implementation "effbench_sdpa",
registered here: plain SDPA (transformers' own function, and its mask function) unless a decode
step runs inside `prefix_attention(...)`; then the cache holds only the rows' suffixes
(hf_kv's suffix-only layout) and each layer's call adds its layer's prefix. A model whose layers
do not call the attention interface would silently skip the prefix: every step counts the calls
and raises when they are not one per layer.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "effbench_sdpa"

_active: dict | None = None  # {"kv": per-layer prefix (keys, values), "length": P, "calls": n}; None: plain SDPA


def attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None, **kwargs):
    """transformers' attention-interface signature; returns ([B, T, Hq, D], None) as SDPA's does."""
    if _active is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    for unsupported in ("sliding_window", "softcap", "s_aux"):
        if kwargs.get(unsupported) is not None:
            raise NotImplementedError(f"cascade decode: attention with {unsupported} is not supported")
    _active["calls"] += 1
    pk, pv = _active["kv"][module.layer_idx]
    P = _active["length"]
    return cascade(query, pk[0, :, :P], pv[0, :, :P], key, value, attention_mask, scaling), None


def cascade(q, pk, pv, sk, sv, mask, scaling: float | None):
    """Attention of q [B, Hq, T, D] over [shared prefix | each row's suffix] -> [B, T, Hq, D].

    pk, pv: [Hkv, P, D], seen by every query; sk, sv: [B, Hkv, S, D]; mask: [B, 1, T, S] bool
    (True: attend) over the suffix positions. Grouped query heads share their KV head. One softmax
    over the scores of both parts, in float32 (what SDPA accumulates in on a CPU): the prefix's
    scores come from one product of all rows' queries, its values are read once."""
    B, Hq, T, D = q.shape
    Hkv, P = pk.shape[:2]
    n = Hq // Hkv * T  # queries per KV head and row
    qh = q.float().reshape(B, Hkv, n, D)
    s1 = (qh.transpose(0, 1).reshape(Hkv, B * n, D) @ pk.float().transpose(-1, -2)).view(Hkv, B, n, P).transpose(0, 1)
    s2 = qh @ sk.float().transpose(-1, -2)  # [B, Hkv, n, S]
    s = torch.cat([s1, s2], dim=-1).mul_(scaling if scaling is not None else D ** -0.5)  # [B, Hkv, n, P + S]
    allowed = mask[:, :, None].expand(B, 1, Hq // Hkv, T, mask.shape[-1]).reshape(B, 1, n, -1)
    s[..., P:].masked_fill_(~allowed, float("-inf"))
    w = torch.softmax(s, dim=-1)
    o = (w[..., :P].transpose(0, 1).reshape(Hkv, B * n, P) @ pv.float()).view(Hkv, B, n, D).transpose(0, 1)
    o = o + w[..., P:] @ sv.float()  # [B, Hkv, n, D]
    return o.reshape(B, Hq, T, D).transpose(1, 2).to(q.dtype).contiguous()


@contextmanager
def prefix_attention(kv, length: int):
    """Decode steps inside attend to `kv`'s first `length` positions (per layer [1, Hkv, >=length, D])
    before each row's own cache; raises when a forward pass did not call the attention once per layer."""
    global _active
    _active = {"kv": kv, "length": length, "calls": 0}
    try:
        yield _active
    finally:
        _active = None


def check_calls(state: dict, layers: int) -> None:
    """One attention call per layer per step, or the model bypassed the interface (prefix skipped)."""
    if state["calls"] != layers:
        raise RuntimeError(f"cascade decode: {state['calls']} attention calls for {layers} layers in one step "
                           "(this model does not route attention through transformers' interface); "
                           "set cascade_decode = false in [backend_args]")
    state["calls"] = 0


def install(model) -> bool:
    """Switch an SDPA model to effbench_sdpa (plain SDPA outside cascade steps); False: left as it is."""
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    model.set_attn_implementation(NAME)
    return model.config._attn_implementation == NAME


AttentionInterface.register(NAME, attention)
AttentionMaskInterface.register(NAME, sdpa_mask)

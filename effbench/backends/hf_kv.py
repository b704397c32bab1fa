"""The KV caches the HF backend's decode loop (effbench/backends/hf.py) runs on, and the one place
that knows transformers' cache classes (DynamicCache, DynamicLayer): a shared prefix's stored KV
(per layer keys and values at batch size 1) and a fresh cache of it for a batch's rows, the
per-layer KV of a cache the prefix was just run into (None unless every layer is a plain
DynamicLayer), and the prefill groups' caches joined back into one at the batch's width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

PrefixKV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values): [1, H, P, D]


@dataclass
class Prefix:
    """The shared prefix a batch runs on: its first `length` tokens' KV, `computed` of them run now."""

    kv: PrefixKV  # [1, H, >= length, D] per layer; a stored LRU entry: read, never written
    length: int
    computed: int

    def expand(self, rows: int) -> DynamicCache:
        """A fresh cache holding the prefix for `rows` rows (a copy: the stored entry stays as it is)."""
        return DynamicCache([(k[:, :, : self.length].expand(rows, -1, -1, -1),
                              v[:, :, : self.length].expand(rows, -1, -1, -1)) for k, v in self.kv])


def fresh_cache(prefix: Prefix | None = None, rows: int = 1) -> DynamicCache:
    """The cache a forward pass over `rows` rows starts from: the prefix's, or an empty one."""
    return prefix.expand(rows) if prefix else DynamicCache()


def entry_bytes(kv: PrefixKV) -> int:
    """What a stored entry holds in memory: its tensors' bytes."""
    return sum(k.nbytes + v.nbytes for k, v in kv)


def plain_kv(cache: DynamicCache) -> PrefixKV | None:
    """The cache's per-layer (keys, values), or None when a layer is not a plain DynamicLayer
    (sliding-window or linear-attention layers: their cache cannot be cut to a prefix)."""
    if not cache.layers or any(type(layer) is not DynamicLayer for layer in cache.layers):
        return None
    return [(layer.keys, layer.values) for layer in cache.layers]


def join_caches(parts: list[tuple[DynamicCache, int]], P: int) -> DynamicCache:
    """One cache for the batch from its prefill groups' (cache, s): a group run without its first
    s (all-padding) suffix columns gets s masked zero positions back after the prefix, so every
    row is [prefix P | pad | suffix] at the batch's width."""

    def widen(t: torch.Tensor, s: int) -> torch.Tensor:  # [rows, H, P+width, D] -> [rows, H, P+L, D]
        return torch.cat([t[:, :, :P], t.new_zeros((t.shape[0], t.shape[1], s, t.shape[3])), t[:, :, P:]], dim=2)

    return DynamicCache([(torch.cat([widen(c.layers[n].keys, s) for c, s in parts]),
                          torch.cat([widen(c.layers[n].values, s) for c, s in parts]))
                         for n in range(len(parts[0][0].layers))])


def unpack_rows(parts: list[tuple[DynamicCache, list[int]]], P: int, L: int) -> DynamicCache:
    """One cache for the batch from packed prefill pieces' (cache, row lengths): each piece's cache
    is [1, H, P + sum(lengths), D], the rows' tokens one after another after the prefix; each row
    becomes [prefix P | L - length masked zeros | its tokens], as the decode loop expects."""
    rows = sum(len(lens) for _, lens in parts)

    def layout(n: int, which: str) -> torch.Tensor:
        first = getattr(parts[0][0].layers[n], which)
        out = first.new_zeros((rows, first.shape[1], P + L, first.shape[3]))
        out[:, :, :P] = first[0, :, :P]
        r = 0
        for cache, lens in parts:
            t, at = getattr(cache.layers[n], which), P
            for length in lens:
                out[r, :, P + L - length:] = t[0, :, at:at + length]
                at, r = at + length, r + 1
        return out

    return DynamicCache([(layout(n, "keys"), layout(n, "values")) for n in range(len(parts[0][0].layers))])

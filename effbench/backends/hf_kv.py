"""The KV caches the HF backend's decode loop (effbench/backends/hf.py) runs on, and the one place
that knows transformers' cache classes (DynamicCache, DynamicLayer): a shared prefix's stored KV
(per layer keys and values at batch size 1) and a fresh cache of it for a batch's rows, the
per-layer KV of a cache the prefix was just run into (None unless every layer is a plain
DynamicLayer), and the prefill's caches joined back into one at the batch's width, in buffers with
room for the whole decode (GrowingLayer: each step writes in place instead of copying the cache);
with cascade decoding (hf_cascade.py) the rows' caches leave the prefix out.
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


class GrowingLayer(DynamicLayer):
    """A DynamicLayer whose keys and values are views of buffers allocated once, with room for the
    whole decode: each step writes its token in place. DynamicLayer concatenates instead, copying
    the whole cache at every step; at 8-16 rows of ~1000-token contexts that copying, not the
    model, bounds a CPU's decode (3.6x slower per step at 16 rows on the ~100M Llama)."""

    def __init__(self, k_buf: torch.Tensor, v_buf: torch.Tensor, n: int):
        super().__init__()
        self.dtype, self.device = k_buf.dtype, k_buf.device
        self._k, self._v, self._n = k_buf, v_buf, n
        self.keys, self.values = k_buf[:, :, :n], v_buf[:, :, :n]
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        t = key_states.shape[-2]
        if self._n + t > self._k.shape[2]:  # past the room asked for: grow, as DynamicLayer would
            self._k, self._v = (torch.cat([b, b.new_zeros((*b.shape[:2], max(t, b.shape[2]), b.shape[3]))], dim=2)
                                for b in (self._k, self._v))
        self._k[:, :, self._n:self._n + t] = key_states
        self._v[:, :, self._n:self._n + t] = value_states
        self._n += t
        self.keys, self.values = self._k[:, :, :self._n], self._v[:, :, :self._n]
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._k, self._v = self._k[indices], self._v[indices]
        self.keys, self.values = self._k[:, :, :self._n], self._v[:, :, :self._n]


def _buffers(like: torch.Tensor, rows: int, capacity: int) -> torch.Tensor:
    """[rows, H, capacity, D], uninitialised: callers write every position a view will show."""
    return like.new_empty((rows, like.shape[1], capacity, like.shape[3]))


def _grown(layout, layers: int, n: int) -> DynamicCache:
    """A cache of GrowingLayers over `layout(layer, "keys" | "values")` buffers, `n` positions used."""
    cache = DynamicCache()
    cache.layers = [GrowingLayer(layout(i, "keys"), layout(i, "values"), n) for i in range(layers)]
    return cache


def for_decoding(cache: DynamicCache, steps: int, drop: int = 0) -> DynamicCache:
    """A one-pass prefill's cache with room for `steps` more tokens per row (GrowingLayer), without
    its first `drop` positions (the shared prefix, for cascade decoding); a cache whose layers are
    not plain DynamicLayers is returned as it is."""
    kv = plain_kv(cache)
    if kv is None:
        return cache
    n = kv[0][0].shape[-2] - drop

    def layout(i: int, which: str) -> torch.Tensor:
        t = kv[i][0 if which == "keys" else 1]
        out = _buffers(t, t.shape[0], n + steps)
        out[:, :, :n] = t[:, :, drop:]
        return out

    return _grown(layout, len(kv), n)


def join_caches(parts: list[tuple[DynamicCache, int]], P: int, steps: int, cascade: bool = False) -> DynamicCache:
    """One cache for the batch from its prefill groups' (cache, s), with room for `steps` more
    tokens per row: a group run without its first s (all-padding) suffix columns gets s masked
    zero positions back after the prefix, so every row is [prefix P | pad | suffix] at the
    batch's width ([pad | suffix] with `cascade`: the decode reads the prefix from its stored entry)."""
    rows = sum(c.layers[0].keys.shape[0] for c, _ in parts)
    L = max(c.layers[0].keys.shape[2] - P + s for c, s in parts)
    o = 0 if cascade else P  # where the suffix part starts in a row

    def layout(n: int, which: str) -> torch.Tensor:
        out = _buffers(getattr(parts[0][0].layers[n], which), rows, o + L + steps)
        r = 0
        for cache, s in parts:
            t = getattr(cache.layers[n], which)  # [group rows, H, P + L - s, D]
            g = t.shape[0]
            out[r:r + g, :, :o] = t[:, :, :o]
            out[r:r + g, :, o:o + s] = 0
            out[r:r + g, :, o + s:o + L] = t[:, :, P:]
            r += g
        return out

    return _grown(layout, len(parts[0][0].layers), o + L)


def unpack_rows(parts: list[tuple[DynamicCache, list[int]]], P: int, L: int, steps: int, cascade: bool = False) -> DynamicCache:
    """One cache for the batch from packed prefill pieces' (cache, row lengths), with room for
    `steps` more tokens per row: each piece's cache is [1, H, P + sum(lengths), D], the rows' tokens
    one after another after the prefix; each row becomes [prefix P | L - length masked zeros |
    its tokens], as the decode loop expects (without the prefix with `cascade`)."""
    rows = sum(len(lens) for _, lens in parts)
    o = 0 if cascade else P

    def layout(n: int, which: str) -> torch.Tensor:
        first = getattr(parts[0][0].layers[n], which)
        out = _buffers(first, rows, o + L + steps)
        out[:, :, :o] = first[0, :, :o]
        r = 0
        for cache, lens in parts:
            t, at = getattr(cache.layers[n], which), P
            for length in lens:
                out[r, :, o:o + L - length] = 0
                out[r, :, o + L - length:o + L] = t[0, :, at:at + length]
                at, r = at + length, r + 1
        return out

    return _grown(layout, len(parts[0][0].layers), o + L)

"""The shared-prefix rule, defined once: what counts as a shared prefix, how a suite's requests
fall into prefix groups and go out in chunks, and what a cached prefix costs in memory.

Three parts use it and must agree: the scheduler orders by the groups (effbench/execute/
order.py), the HF backend computes a batch's prefix once and keeps its KV in a cache bounded
in bytes (effbench/backends/hf.py), and `effbench check` projects both the prefill that saves and
the memory the cache holds (effbench/predict/cost_model.py, memfit.py, check.py). README,
"Backends" says what the reuse buys. Light on purpose: no torch here.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, Hashable, Iterator, Mapping, Sequence, TypeVar

from effbench.contracts import GenerationRequest

# A shared prefix shorter than this is not worth a cache entry, a group, or a second forward call.
MIN_SHARED_PREFIX = 32  # tokens
CHUNK_BATCHES = 4  # effbench order: batches of one prefix group that go out together
# The HF backend's cache bound when the manifest sets none: this share of the memory free once the
# model is loaded, leaving the rest to the batches' own KV caches and activations.
DEFAULT_FREE_FRACTION = 0.25


def common_prefix_length(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest prefix all of `seqs` share (that of their lexicographic min and max)."""
    if not seqs:
        return 0
    lo, hi = min(seqs), max(seqs)
    n = 0
    for a, b in zip(lo, hi):
        if a != b:
            break
        n += 1
    return n


def shared_length(seqs: Sequence[Sequence[int]]) -> int:
    """The prefix the prompts `seqs` can share: their common prefix, less what would leave a prompt
    without a token of its own (the last position's logits come from running the suffix)."""
    return min(common_prefix_length(seqs), min(len(s) for s in seqs) - 1) if seqs else 0


@dataclass(frozen=True)
class PrefixGroup:
    key: str  # requests with the same key share their first `tokens` prompt tokens
    tokens: int  # 0: no prefix worth sharing (the group is then just the run)


def prefix_groups(requests: Sequence[GenerationRequest], token_ids: Mapping[str, Sequence[int]]) -> dict[str, PrefixGroup]:
    """Each run's longest shared prompt prefix, in tokens. Runs with the same prefix form one group
    (keyed by the prefix's hash); a run whose prompts share fewer than MIN_SHARED_PREFIX tokens is
    a group of its own with no prefix. A single-request run shares nothing."""
    by_run: dict[str, list[GenerationRequest]] = {}
    for r in requests:
        by_run.setdefault(r.origin.run, []).append(r)
    out: dict[str, PrefixGroup] = {}
    for run, reqs in by_run.items():
        n = shared_length([token_ids[r.id] for r in reqs]) if len(reqs) > 1 else 0
        if n >= MIN_SHARED_PREFIX:
            first = list(token_ids[reqs[0].id][:n])
            group = PrefixGroup("prefix:" + hashlib.sha1(repr(first).encode()).hexdigest()[:16], n)
        else:
            group = PrefixGroup("run:" + run, 0)
        out.update({r.id: group for r in reqs})
    return out


T = TypeVar("T")


def chunked(batches: list[T]) -> list[list[T]]:
    """A group's batches in chunks of CHUNK_BATCHES that go out back to back: the backend computes
    the prefix about once per chunk, while chunks of different groups take turns."""
    return [batches[i : i + CHUNK_BATCHES] for i in range(0, len(batches), CHUNK_BATCHES)]


def kv_bytes(num_layers: int, num_kv_heads: int, head_dim: int, dtype_bytes: int, tokens: int = 1) -> int:
    """Bytes of the KV cache of `tokens` positions of one sequence: keys and values (2) of every
    layer, kv_heads x head_dim each, at the dtype's size. One prefix cache entry is this at its
    length; a batch's cache is this per row."""
    return 2 * num_layers * num_kv_heads * head_dim * dtype_bytes * tokens


def default_cache_bytes(free_bytes: int) -> int:
    """The prefix cache bound when the manifest sets none (`[backend_args] prefix_cache_bytes`)."""
    return max(0, int(free_bytes * DEFAULT_FREE_FRACTION))


def tokens_kept(groups: Mapping[str, PrefixGroup], lengths: Mapping[str, int]) -> int:
    """The prefix tokens a run of these requests would have the cache keep, were it unbounded: one
    entry per prefix group, and one more of the longest prompt (a batch sharing more than its
    group, such as a batch of one, stores its own longer entry). What memory the cache can hold
    is the lesser of this and its bound (effbench/predict/memfit.py)."""
    by_key = {g.key: g.tokens for g in groups.values() if g.tokens > 0}
    return sum(by_key.values()) + (max(lengths.values()) if by_key and lengths else 0)


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class PrefixCache(Generic[K, V]):
    """Least recently used entries, bounded in bytes: storing one evicts the least recently used
    until it fits; one bigger than the whole bound is not stored (0: nothing kept). Each entry's
    size is given when it is stored (the HF backend: its tensors' bytes; the cost model: kv_bytes
    at its group's length)."""

    def __init__(self, bound_bytes: int):
        self.bound_bytes = bound_bytes
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()  # most recent last
        self.held_bytes = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._entries))

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def items(self) -> list[tuple[K, V]]:
        return [(k, v) for k, (v, _) in self._entries.items()]

    def get(self, key: K) -> V:
        """The entry, now the most recently used."""
        self._entries.move_to_end(key)
        return self._entries[key][0]

    def put(self, key: K, value: V, nbytes: int) -> bool:
        """Store an entry (the most recently used); False when it is bigger than the bound."""
        if key in self._entries:
            self.held_bytes -= self._entries.pop(key)[1]
        if nbytes > self.bound_bytes:
            return False
        while self._entries and self.held_bytes + nbytes > self.bound_bytes:
            self.held_bytes -= self._entries.popitem(last=False)[1][1]
            self.evicted += 1
        self._entries[key] = (value, nbytes)
        self.held_bytes += nbytes
        return True

    def clear(self) -> None:
        self._entries.clear()
        self.held_bytes = 0

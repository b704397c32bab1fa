"""Translate measured times from one hardware profile to another: a first-order roofline model.

Prefill (all prompt tokens of a batch in one forward pass) is compute-bound: its time scales with
the matmul FLOP/s of the dtype, t_dst = t_src * src.flops[dtype] / dst.flops[dtype]. Decode (one
token per sequence per step) is memory-bound: every step streams the weights and the KV cache, so
t_dst = t_src * src.bandwidth / dst.bandwidth.

What this model leaves out, and which way it errs:
- Fixed per-step overheads (Python, the HF generate loop, tokenization, kernel launches, host
  syncs) do not scale with FLOP/s or bandwidth. Translating a CPU measurement to a GPU divides
  them by the (large) hardware ratio too, so CPU -> GPU predictions are OPTIMISTIC (too fast): on
  the GPU a small model's decode step is often launch-bound at ~10-30 ms whatever the card.
  GPU -> CPU translations err the other way (pessimistic: overheads multiplied). Fit a cost model
  with a separate fixed term and keep it unscaled (`translate_coefficients`) to bound this.
- A measured profile holds achieved rates while a datasheet holds peaks that real kernels reach
  only in part (typically 60-80% of matmul peak, 80-90% of bandwidth): measured -> datasheet is
  optimistic by that factor as well.
- Large-batch decode becomes compute-bound and small prefills memory-bound; quantized (bnb) kernels
  dequantize on the fly and follow neither roof cleanly. The model ignores these crossovers.
"""

from __future__ import annotations

from dataclasses import dataclass

from effbench.contracts import EffbenchError
from effbench.predict.hardware import DTYPES, HardwareProfile


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise EffbenchError(f"dtype {dtype!r}: not a profiled dtype; one of {', '.join(DTYPES)}")


def compute_ratio(src: HardwareProfile, dst: HardwareProfile, dtype: str) -> float:
    """Time multiplier for compute-bound work moved from src to dst (< 1: dst is faster)."""
    _check_dtype(dtype)
    return src.flops_for(dtype) / dst.flops_for(dtype)


def bandwidth_ratio(src: HardwareProfile, dst: HardwareProfile) -> float:
    """Time multiplier for memory-bound work moved from src to dst (< 1: dst is faster)."""
    return src.bandwidth_bytes_per_s / dst.bandwidth_bytes_per_s


def translate(
    prefill_seconds: float, decode_seconds: float, src: HardwareProfile, dst: HardwareProfile, dtype: str
) -> tuple[float, float]:
    """(prefill, decode) seconds measured on `src`, as predicted on `dst`: prefill by the FLOP/s
    ratio of `dtype`, decode by the bandwidth ratio. Identity when src == dst."""
    return prefill_seconds * compute_ratio(src, dst, dtype), decode_seconds * bandwidth_ratio(src, dst)


@dataclass(frozen=True)
class CostCoefficients:
    """Per-batch time model: T = fixed + prefill * prefill_tokens + step * decode_steps + row * decoded_tokens.

    fixed: s per batch (Python, tokenization, set-up); prefill: s per prompt token; step: s per
    decode step of the batch (weights streamed once per step); row: s per generated token, i.e.
    per sequence per step (its KV cache read and its share of the compute)."""

    fixed: float
    prefill: float
    step: float
    row: float

    def seconds(self, prefill_tokens: float, decode_steps: float, decoded_tokens: float) -> float:
        return self.fixed + self.prefill * prefill_tokens + self.step * decode_steps + self.row * decoded_tokens


def translate_coefficients(
    coef: CostCoefficients, src: HardwareProfile, dst: HardwareProfile, dtype: str, *, fixed_scale: float = 1.0
) -> CostCoefficients:
    """The cost model's coefficients moved from src to dst: the prefill term by the FLOP/s ratio,
    the step and row terms by the bandwidth ratio, the fixed term multiplied by `fixed_scale`
    (default 1: per-batch overheads are host-side and do not follow the device's roofs)."""
    c, b = compute_ratio(src, dst, dtype), bandwidth_ratio(src, dst)
    return CostCoefficients(fixed=coef.fixed * fixed_scale, prefill=coef.prefill * c, step=coef.step * b, row=coef.row * b)

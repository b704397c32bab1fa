"""Hardware microbenchmarks with torch's reference paths: memory bandwidth, matmul FLOP/s, attention.

The same code runs on the CPU and on a CUDA device. Timing follows the usual practice (gpt-fast
`generate.py`, nanoGPT `bench.py`): warm-up calls are excluded, the device is synchronized on both
sides of every `perf_counter` read, and the figure reported is the median over repetitions. Each
result carries its conditions (shapes, dtype, device, threads, repetitions), so a number is never
shown without what produced it.

Sizes default small on the CPU (a whole profile in seconds on 2 cores) and larger on a GPU
(big enough to leave the L2 cache and saturate the card).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class BenchResult:
    """One measured rate with the conditions that produced it."""

    name: str  # "copy", "matmul", "sdpa"
    value: float  # the rate, in `unit`
    unit: str  # "B/s" or "FLOP/s"
    shapes: tuple[tuple[int, ...], ...]  # operand shapes, e.g. ((n, n), (n, n)) for a matmul
    dtype: str
    device: str  # "cpu" or the CUDA device name
    threads: int  # torch intra-op threads (host threads on a GPU)
    reps: int  # timed repetitions actually taken (a time cap can cut them short)
    calls_per_rep: int  # kernel calls between two synchronizations
    median_s: float  # seconds of one call, median over reps
    times_s: tuple[float, ...] = ()  # seconds of one call, each rep
    work: float = 0.0  # bytes or FLOPs of one call
    capped: bool = False  # the time cap stopped the repetitions (or shrank the size)
    extra: dict[str, float] = field(default_factory=dict)  # e.g. tokens_per_s for attention

    def conditions(self) -> str:
        """The conditions as one short line, for tables and notes."""
        dims = ["x".join(str(d) for d in s) for s in self.shapes]
        if self.name == "copy":
            shapes = f"{self.work / 2 / 2**20:g} MiB"  # work counts the bytes read and written
        elif self.name == "sdpa":
            shapes = f"q,k,v [B,H,S,D]={dims[0]}" + (" causal" if self.extra.get("causal") else "")
        else:
            shapes = " @ ".join(dims)
        cap = ", time-capped" if self.capped else ""
        return (
            f"{self.name} {shapes} {self.dtype} on {self.device}, {self.threads} threads,"
            f" median of {self.reps} reps x {self.calls_per_rep} calls{cap}"
        )


def _device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def device_name(dev: torch.device) -> str:
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"


def _time_calls(
    fn: Callable[[], object], dev: torch.device, *, reps: int, warmup: int, max_seconds: float, min_rep_s: float
) -> tuple[list[float], int, bool]:
    """Seconds per call of `fn`, one entry per timed rep; (times, calls_per_rep, capped).

    Warm-up calls are not timed. A rep runs `calls_per_rep` calls between two synchronizations,
    chosen from the last warm-up call so one rep lasts about `min_rep_s` (small GPU kernels
    would otherwise time the launch and the sync). Reps stop early once `max_seconds` is spent,
    but at least one rep is always timed."""
    one = 0.0
    for _ in range(max(1, warmup)):
        _sync(dev)
        t0 = time.perf_counter()
        fn()
        _sync(dev)
        one = time.perf_counter() - t0
    calls = max(1, min(1000, int(min_rep_s / max(one, 1e-9))))
    times: list[float] = []
    capped = False
    start = time.perf_counter()
    for _ in range(reps):
        _sync(dev)
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        _sync(dev)
        times.append((time.perf_counter() - t0) / calls)
        if time.perf_counter() - start > max_seconds and len(times) < reps:
            capped = True
            break
    return times, calls, capped


def _result(name, unit, work, times, calls, capped, shapes, dtype, dev, extra=None) -> BenchResult:
    med = statistics.median(times)
    return BenchResult(
        name=name,
        value=work / med,
        unit=unit,
        shapes=tuple(tuple(int(d) for d in s) for s in shapes),
        dtype=dtype,
        device=device_name(dev),
        threads=torch.get_num_threads(),
        reps=len(times),
        calls_per_rep=calls,
        median_s=med,
        times_s=tuple(times),
        work=float(work),
        capped=capped,
        extra=dict(extra or {}),
    )


def _min_rep_s(dev: torch.device) -> float:
    return 0.02 if dev.type == "cuda" else 0.0  # on the CPU one call is long enough to time alone


def copy_bandwidth(
    nbytes: int | None = None,
    *,
    device: str | torch.device | None = None,
    reps: int = 7,
    warmup: int = 2,
    max_seconds: float = 1.0,
) -> BenchResult:
    """Memory bandwidth from `dst.copy_(src)` of a float32 buffer: (bytes read + bytes written) / time.
    Default size: 64 MiB on the CPU (twice a 32 MiB L3), 1 GiB on a GPU (far past its L2)."""
    dev = _device(device)
    nbytes = nbytes or (2**30 if dev.type == "cuda" else 64 * 2**20)
    n = max(1, nbytes // 4)
    src = torch.ones(n, dtype=torch.float32, device=dev)  # ones, not empty: pages touched before timing
    dst = torch.zeros_like(src)
    times, calls, capped = _time_calls(
        lambda: dst.copy_(src), dev, reps=reps, warmup=warmup, max_seconds=max_seconds, min_rep_s=_min_rep_s(dev)
    )
    return _result("copy", "B/s", 2 * 4 * n, times, calls, capped, [(n,)], "float32", dev)


def _default_matmul_n(dev: torch.device, dtype: str) -> int:
    if dev.type == "cuda":
        return 8192
    # Most CPUs have no fast float16 GEMM (torch falls back to a scalar loop: ~1-3 GFLOP/s on
    # an AVX-512 EPYC, against ~100 for float32); a small size keeps it in the time cap.
    return 256 if dtype == "float16" else 1024


def matmul_flops(
    dtype: str = "float32",
    n: int | None = None,
    *,
    device: str | torch.device | None = None,
    reps: int = 5,
    warmup: int = 1,
    max_seconds: float = 1.0,
) -> BenchResult:
    """Dense FLOP/s of a square [n, n] @ [n, n] matmul: 2 * n**3 FLOPs per call.

    float32 runs at torch's float32 matmul precision as set (default "highest": no TF32 on
    Ampere or later, which matches the datasheets' non-tensor FP32 figure); the setting is
    recorded in `extra`. If one warm-up call alone takes more than half of `max_seconds`, n is
    halved (down to 64) and the result is marked capped: the shape reported is what ran."""
    dev = _device(device)
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: one of {list(DTYPES)}")
    n = n or _default_matmul_n(dev, dtype)
    tiny = torch.ones(64, 64, device=dev, dtype=DTYPES[dtype])
    torch.mm(tiny, tiny)  # library start-up (cuBLAS handle, oneDNN primitives) out of the size probe
    shrunk = False
    while True:
        g = torch.Generator(device=dev).manual_seed(0)
        a = torch.randn(n, n, device=dev, dtype=DTYPES[dtype], generator=g)
        b = torch.randn(n, n, device=dev, dtype=DTYPES[dtype], generator=g)
        _sync(dev)
        t0 = time.perf_counter()
        torch.mm(a, b)
        _sync(dev)
        if n <= 64 or time.perf_counter() - t0 <= max_seconds / 2:
            break
        n //= 2
        shrunk = True
    out = torch.empty(n, n, device=dev, dtype=DTYPES[dtype])
    times, calls, capped = _time_calls(
        lambda: torch.mm(a, b, out=out), dev, reps=reps, warmup=warmup, max_seconds=max_seconds, min_rep_s=_min_rep_s(dev)
    )
    extra = {"tf32_allowed": float(torch.get_float32_matmul_precision() != "highest")} if dtype == "float32" else {}
    return _result("matmul", "FLOP/s", 2 * n**3, times, calls, capped or shrunk, [(n, n), (n, n)], dtype, dev, extra)


def attention_flops(
    batch: int | None = None,
    heads: int | None = None,
    seq_len: int | None = None,
    head_dim: int | None = None,
    *,
    dtype: str | None = None,
    causal: bool = True,
    device: str | torch.device | None = None,
    reps: int = 5,
    warmup: int = 1,
    max_seconds: float = 1.0,
) -> BenchResult:
    """Prefill attention through `torch.nn.functional.scaled_dot_product_attention`.

    q, k, v: [B, H, S, D]. FLOPs counted are the useful ones: QK^T and PV, 2 * 2 * B * H * S^2 * D,
    halved-plus-diagonal for a causal mask (2 * B * H * D * S * (S + 1)). `extra["tokens_per_s"]`
    is B * S / time. Defaults: B=1, H=8, S=512, D=64, float32 on the CPU; B=8, H=32, S=2048,
    D=128, bfloat16 on a GPU (a 7B Llama layer at the challenge's 2048 tokens)."""
    dev = _device(device)
    gpu = dev.type == "cuda"
    batch = batch or (8 if gpu else 1)
    heads = heads or (32 if gpu else 8)
    seq_len = seq_len or (2048 if gpu else 512)
    head_dim = head_dim or (128 if gpu else 64)
    dtype = dtype or ("bfloat16" if gpu else "float32")
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: one of {list(DTYPES)}")
    shape = (batch, heads, seq_len, head_dim)
    g = torch.Generator(device=dev).manual_seed(0)
    q, k, v = (torch.randn(shape, device=dev, dtype=DTYPES[dtype], generator=g) for _ in range(3))
    sdpa = torch.nn.functional.scaled_dot_product_attention
    times, calls, capped = _time_calls(
        lambda: sdpa(q, k, v, is_causal=causal), dev, reps=reps, warmup=warmup, max_seconds=max_seconds, min_rep_s=_min_rep_s(dev)
    )
    pairs = seq_len * (seq_len + 1) / 2 if causal else seq_len * seq_len  # (query, key) pairs computed
    flops = 2 * 2 * batch * heads * head_dim * pairs
    extra = {"tokens_per_s": batch * seq_len / statistics.median(times), "causal": float(causal)}
    return _result("sdpa", "FLOP/s", flops, times, calls, capped, [shape] * 3, dtype, dev, extra)


@dataclass(frozen=True)
class Measurement:
    """All microbenchmarks of one machine: what `effbench.predict.hardware.measure_here` turns into a profile."""

    device: str
    kind: str  # "cpu" | "gpu"
    bandwidth: BenchResult
    matmul: dict[str, BenchResult]  # dtype -> result
    attention: BenchResult | None = None


def measure(quick: bool = True, *, device: str | torch.device | None = None, attention: bool = True) -> Measurement:
    """Run every microbenchmark once. `quick` uses smaller GPU sizes and fewer reps; on the CPU
    sizes are small either way (the full run gets more reps and a longer time cap)."""
    dev = _device(device)
    gpu = dev.type == "cuda"
    reps, cap = (5, 1.0) if quick else (11, 3.0)
    bw_bytes = (256 * 2**20 if quick else 2**30) if gpu else (64 if quick else 256) * 2**20
    bw = copy_bandwidth(bw_bytes, device=dev, reps=reps, max_seconds=cap)
    mm = {}
    for dt in DTYPES:
        n = (4096 if quick else 8192) if gpu else None
        mm[dt] = matmul_flops(dt, n, device=dev, reps=reps, max_seconds=cap)
    att = None
    if attention:
        att = attention_flops(seq_len=(1024 if quick else 2048) if gpu else None, device=dev, reps=reps, max_seconds=cap)
    return Measurement(device=device_name(dev), kind="gpu" if gpu else "cpu", bandwidth=bw, matmul=mm, attention=att)

"""Hardware profiles: memory size, memory bandwidth and dense matmul FLOP/s per dtype.

Targets (the challenge's RTX 4090 and A100-40GB tracks, plus H100 and H200) come from vendor
datasheets; "here" is the machine in hand, measured by `effbench.predict.kernels.microbench` and cached.
Peaks live in this table keyed by device name, never as a bare constant.

FLOP/s are dense (no 2:4 sparsity). bfloat16/float16 are tensor-core figures with FP32
accumulate (what cuBLAS does for torch's half-precision matmuls). float32 is the non-tensor-core
FP32 figure on Ampere, Ada and Hopper: torch's default float32 matmul precision ("highest") does
not use TF32. Memory is the datasheet capacity read in binary units (24 GB = 24 GiB: GPU memory is
sized in powers of two); the driver shows a little less (nvidia-smi: 24564 MiB on a 4090) and
`effbench.predict.memfit` subtracts a CUDA context on top.

Sources:
- RTX 4090: NVIDIA Ada GPU Architecture whitepaper (v2.1), appendix table "GeForce RTX 4090":
  peak FP32 82.6 TFLOPS (non-tensor); FP16 and BF16 tensor with FP32 accumulate 165.2 dense
  (330.4 sparse; 330.3 dense only with FP16 accumulate); 24 GB GDDR6X, 384-bit, 21 Gbps: 1008 GB/s.
- A100 40GB: NVIDIA A100 Tensor Core GPU datasheet / Ampere architecture whitepaper: FP32 19.5
  TFLOPS, BF16/FP16 tensor 312 dense (624 sparse), 40 GB HBM2 at 1555 GB/s.
- H100 SXM5 80GB: NVIDIA H100 Tensor Core GPU datasheet: FP32 67 TFLOPS, BF16/FP16 tensor 1979
  with sparsity, i.e. 989.5 dense (Hopper whitepaper: 989.4), 80 GB HBM3 at 3.35 TB/s.
- H200 SXM 141GB: NVIDIA H200 Tensor Core GPU datasheet: same GH100 compute as H100 SXM (FP32 67,
  BF16/FP16 1979 sparse = 989.5 dense), 141 GB HBM3e at 4.8 TB/s.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import socket
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from effbench.atomic import write_json_atomic
from effbench.contracts import EffbenchError

DType = Literal["float32", "bfloat16", "float16"]
DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16")
GiB = 2**30
T = 1e12


class HardwareProfile(BaseModel):
    """What a device offers to an LLM server: memory, memory bandwidth, dense matmul FLOP/s."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    kind: Literal["gpu", "cpu"]
    memory_bytes: int = Field(gt=0)
    bandwidth_bytes_per_s: float = Field(gt=0)
    flops: dict[DType, float]  # dtype -> dense matmul FLOP/s
    source: Literal["datasheet", "measured"]
    notes: str = ""
    conditions: dict[str, str] = Field(default_factory=dict)  # measured: how each figure was obtained

    @field_validator("flops")
    @classmethod
    def _all_dtypes(cls, v: dict[str, float]) -> dict[str, float]:
        missing = [d for d in DTYPES if d not in v]
        if missing:
            raise ValueError(f"missing FLOP/s for {missing}")
        bad = {d: x for d, x in v.items() if not (math.isfinite(x) and x > 0)}
        if bad:
            raise ValueError(f"FLOP/s must be positive and finite, got {bad}")
        return v

    def flops_for(self, dtype: str) -> float:
        if dtype not in self.flops:
            raise EffbenchError(f"dtype {dtype!r}: no FLOP/s in hardware profile {self.name!r}; one of {list(DTYPES)}")
        return self.flops[dtype]


def _card(name, memory_gib, bw, fp32, half, notes) -> HardwareProfile:
    return HardwareProfile(
        name=name,
        kind="gpu",
        memory_bytes=int(memory_gib * GiB),
        bandwidth_bytes_per_s=bw,
        flops={"float32": fp32, "bfloat16": half, "float16": half},
        source="datasheet",
        notes=notes,
    )


# Datasheet peaks (see the module docstring for the documents). Real kernels reach a fraction of
# these (typically 60-80% of matmul peak, 80-90% of bandwidth).
DATASHEETS: dict[str, HardwareProfile] = {
    p.name: p
    for p in (
        _card("4090", 24, 1008e9, 82.6 * T, 165.2 * T, "NVIDIA GeForce RTX 4090 (Ada AD102), 24 GB GDDR6X; the challenge's 4090 track"),
        _card("a100-40gb", 40, 1555e9, 19.5 * T, 312 * T, "NVIDIA A100 40GB (HBM2); the challenge's A100 track"),
        _card("h100", 80, 3.35e12, 67 * T, 989.5 * T, "NVIDIA H100 SXM5 80 GB (HBM3)"),
        _card("h200", 141, 4.8e12, 67 * T, 989.5 * T, "NVIDIA H200 SXM 141 GB (HBM3e); same compute as H100 SXM"),
    )
}
HERE = "here"


def known_names() -> list[str]:
    return [*DATASHEETS, HERE]


def get_profile(name: str, *, cache_dir: Path | None = None, quick: bool = True) -> HardwareProfile:
    """A datasheet profile by name, or "here": this machine, measured (cached under `cache_dir`)."""
    key = name.strip().lower()
    if key == HERE:
        return measure_here(quick, cache_dir=cache_dir)
    if key in DATASHEETS:
        return DATASHEETS[key]
    raise EffbenchError(f"--track: unknown hardware profile {name!r}; one of {', '.join(known_names())}")


# --------------------------------------------------------------------------- the machine in hand


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _identity(quick: bool) -> dict[str, str]:
    """What a cached measurement is valid for: host, device model, torch, threads, mode."""
    import torch

    gpu = torch.cuda.is_available()
    return {
        "host": socket.gethostname(),
        "device": torch.cuda.get_device_name(0) if gpu else _cpu_model(),
        "torch": torch.__version__,
        "threads": str(torch.get_num_threads()),
        "mode": "quick" if quick else "full",
    }


def _cache_path(cache_dir: Path, ident: dict[str, str]) -> Path:
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir / "hardware" / f"here-{digest}.json"


def _read_cache(path: Path, ident: dict[str, str]) -> HardwareProfile | None:
    """The cached profile, or None when absent, unreadable or made for another identity
    (a broken cache file is remeasured and overwritten, not an error)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("identity") != ident:
            return None
        return HardwareProfile.model_validate(data["profile"])
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError, ValidationError):
        return None


def _write_cache(path: Path, ident: dict[str, str], profile: HardwareProfile) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"identity": ident, "profile": profile.model_dump(mode="json")})


def profile_from_measurement(m, memory_bytes: int, ident: dict[str, str]) -> HardwareProfile:
    """A "here" profile from `effbench.predict.kernels.microbench.measure`'s results."""
    conditions = {"bandwidth": m.bandwidth.conditions()}
    conditions.update({dt: r.conditions() for dt, r in m.matmul.items()})
    if m.attention is not None:
        a = m.attention
        conditions["attention"] = f"{a.value / T:.3g} TFLOP/s, {a.extra['tokens_per_s']:.4g} tokens/s: {a.conditions()}"
    conditions["measured"] = time.strftime("%Y-%m-%dT%H:%M:%S%z") + f" on {ident['host']}, torch {ident['torch']}"
    return HardwareProfile(
        name=HERE,
        kind=m.kind,
        memory_bytes=memory_bytes,
        bandwidth_bytes_per_s=m.bandwidth.value,
        flops={dt: r.value for dt, r in m.matmul.items()},
        source="measured",
        notes=f"{ident['device']} ({ident['mode']} microbenchmarks; achieved rates, not peaks)",
        conditions=conditions,
    )


def _memory_here() -> int:
    """Device memory: total GPU memory (torch.cuda.mem_get_info), else total RAM (psutil)."""
    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.mem_get_info(0)[1])
    import psutil

    return int(psutil.virtual_memory().total)


def measure_here(quick: bool = True, *, cache_dir: Path | None = None, refresh: bool = False) -> HardwareProfile:
    """This machine's profile from the microbenchmarks; with `cache_dir`, read from / written to
    `cache_dir/hardware/here-<hash>.json`, keyed by host, CPU model or GPU name, torch version,
    thread count and quick/full, so a check does not remeasure every time."""
    ident = _identity(quick)
    path = _cache_path(Path(cache_dir), ident) if cache_dir is not None else None
    if path is not None and not refresh:
        cached = _read_cache(path, ident)
        if cached is not None:
            return cached
    from effbench.predict.kernels.microbench import measure

    profile = profile_from_measurement(measure(quick), _memory_here(), ident)
    if path is not None:
        _write_cache(path, ident, profile)
    return profile

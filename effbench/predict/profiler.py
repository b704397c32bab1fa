"""Telemetry over time, sampled in a background thread, and per-run performance figures.

On an NVIDIA GPU (nvidia-ml-py): device memory used, utilization, power, the total-energy counter
where the card has one, SM clock. Everywhere: RSS and CPU time of effbench and its backend worker.
Every figure carries its source ("nvml" or "cpu") so a report never passes a CPU process's memory
off as a GPU's.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import psutil

from effbench.contracts import GenerationResult
from effbench.predict.contention import CpuTimes, contention_between, core_times


@dataclass(frozen=True)
class Sample:
    t: float  # time.time()
    rss_bytes: int  # this process and its children (the backend worker)
    cpu_seconds: float  # user + system CPU time of the same processes, cumulative
    gpu_bytes: int | None = None  # device memory used (NVML); None without a GPU
    gpu_util: float | None = None  # percent
    power_w: float | None = None
    energy_j: float | None = None  # the card's total-energy counter, where it has one
    sm_clock_mhz: int | None = None
    cores: CpuTimes | None = None  # /proc/stat over this process's cores, cumulative; None without it


def _nvml_handle():
    """The NVML handle of GPU 0, or None where there is no NVIDIA driver or GPU."""
    import pynvml

    try:
        pynvml.nvmlInit()
        if pynvml.nvmlDeviceGetCount() == 0:
            return None
        return pynvml.nvmlDeviceGetHandleByIndex(0)
    except pynvml.NVMLError:
        return None


def _nvml_optional(fn, *args):
    """A figure some cards do not report (energy on consumer cards): None there, not an error."""
    import pynvml

    try:
        return fn(*args)
    except pynvml.NVMLError_NotSupported:
        return None


@dataclass
class Telemetry:
    # seconds between samples; None: 0.1 s on a GPU (NVML is cheap and memory moves fast), 0.5 s on
    # a CPU, where each sample wakes this process on the cores the backend computes on
    interval: float | None = None
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self):
        self._proc = psutil.Process(os.getpid())
        self._nvml = _nvml_handle()
        if self.interval is None:
            self.interval = 0.1 if self._nvml is not None else 0.5
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def source(self) -> str:
        return "nvml" if self._nvml is not None else "cpu"

    def sample(self) -> Sample:
        t = self._proc.cpu_times()  # children_*: processes already reaped (a finished worker)
        rss, cpu = 0, t.children_user + t.children_system
        for p in [self._proc, *self._proc.children(recursive=True)]:
            try:
                rss += p.memory_info().rss
                t = p.cpu_times()
                cpu += t.user + t.system
            except psutil.NoSuchProcess:  # exited between listing and reading: it holds nothing now
                continue
        # a child reaped between the two reads above is in neither sum (children_* was read first:
        # the other order would count it twice): the cumulative CPU seconds never go back, so a phase
        # ending as the worker exits keeps the worker's seconds (measured: -0.03 CPU s for an 85 s
        # execute phase)
        cpu = max(cpu, self.samples[-1].cpu_seconds) if self.samples else cpu
        s = Sample(time.time(), rss, cpu, cores=core_times())
        if self._nvml is not None:
            import pynvml

            h = self._nvml
            energy = _nvml_optional(pynvml.nvmlDeviceGetTotalEnergyConsumption, h)
            power = _nvml_optional(pynvml.nvmlDeviceGetPowerUsage, h)
            s = Sample(
                s.t, rss, cpu,
                gpu_bytes=int(pynvml.nvmlDeviceGetMemoryInfo(h).used),
                gpu_util=float(pynvml.nvmlDeviceGetUtilizationRates(h).gpu),
                power_w=power / 1000 if power is not None else None,
                energy_j=energy / 1000 if energy is not None else None,
                sm_clock_mhz=_nvml_optional(pynvml.nvmlDeviceGetClockInfo, h, pynvml.NVML_CLOCK_SM),
                cores=s.cores,
            )
        self.samples.append(s)
        return s

    def _loop(self):
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> "Telemetry":
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="effbench-telemetry", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    def _window(self, t0: float, t1: float) -> list[Sample]:
        """Samples in [t0, t1], plus the nearest ones outside it: a window shorter than the
        sampling interval still gets the level it ran at."""
        before = [s for s in self.samples if s.t < t0][-1:]
        after = [s for s in self.samples if s.t > t1][:1]
        return before + [s for s in self.samples if t0 <= s.t <= t1] + after

    def peak(self, t0: float = 0.0, t1: float = float("inf")) -> int:
        """Peak bytes over [t0, t1] from the primary source (GPU memory on a GPU, else RSS)."""
        vals = [(s.gpu_bytes if s.gpu_bytes is not None else s.rss_bytes) for s in self._window(t0, t1)]
        return max(vals) if vals else 0

    def timeline(self, t0: float, max_points: int = 600) -> dict:
        """The samples since t0 for the report's plots, thinned to at most max_points (every k-th
        sample, keeping the peak's) so a five-hour run stays a small file."""
        w = [s for s in self.samples if s.t >= t0]
        step = max(1, -(-len(w) // max_points))
        keep = w[::step]
        if w:
            top = max(w, key=lambda s: s.gpu_bytes if s.gpu_bytes is not None else s.rss_bytes)
            if top not in keep:
                keep = sorted([*keep, top], key=lambda s: s.t)
        cols = ("rss_bytes", "cpu_seconds", "gpu_bytes", "gpu_util", "power_w")
        return {"source": self.source, "t0": t0, "columns": ["t", *cols],
                "samples": [[round(s.t - t0, 3), *(getattr(s, c) for c in cols)] for s in keep]}

    def summary(self, t0: float, t1: float) -> dict:
        """Figures for one phase: peak memory, CPU seconds, what else took this process's cores (the
        hypervisor's steal as a share of their time, other processes in cores' worth: the machine's
        pace during the phase, which check's probe reports the same way), and on a GPU
        utilization, power, energy."""
        w = self._window(t0, t1)
        out = {
            "seconds": round(t1 - t0, 3),
            "peak_rss_bytes": max((s.rss_bytes for s in w), default=0),
            "cpu_seconds": round(w[-1].cpu_seconds - w[0].cpu_seconds, 3) if len(w) > 1 else 0.0,
        }
        if len(w) > 1 and (c := contention_between(w[0].cores, w[-1].cores, w[-1].cpu_seconds - w[0].cpu_seconds,
                                                   w[-1].t - w[0].t)) is not None:
            out.update(steal_share=round(c.steal_share, 4), other_cores=round(c.other_cores, 3))
        if self._nvml is not None and w:
            util = [s.gpu_util for s in w if s.gpu_util is not None]
            power = [s.power_w for s in w if s.power_w is not None]
            energy = [s.energy_j for s in w if s.energy_j is not None]
            out.update(
                peak_gpu_bytes=max(s.gpu_bytes or 0 for s in w),
                mean_gpu_util=round(float(np.mean(util)), 1) if util else None,
                mean_power_w=round(float(np.mean(power)), 1) if power else None,
                energy_j=round(energy[-1] - energy[0], 1) if len(energy) > 1 else None,
                max_sm_clock_mhz=max((s.sm_clock_mhz or 0 for s in w), default=None),
            )
        return out


def run_performance(results: Sequence[GenerationResult]) -> dict:
    """Per-run figures from its results: prefill and decode tokens/s (each request's share of its
    batch's prefill and decode time), latency percentiles, batch sizes. Prefill tokens/s counts the
    prompt tokens served (cached prefix included: what the user gets per second); `cached_share`
    says how many of them came from a shared prefix's cache."""
    done = [r for r in results if r.ok and r.timings.started is not None and r.timings.finished is not None]
    if not done:
        return {"prefill_tokens_per_s": None, "decode_tokens_per_s": None, "cached_share": 0.0, "latency_s": None, "batch_sizes": {}}
    prefill_s = decode_s = 0.0
    prompt = decoded = cached = 0
    for r in done:
        first = r.timings.first_token if r.timings.first_token is not None else r.timings.finished
        share = 1 / max(r.batch_size, 1)
        prefill_s += (first - r.timings.started) * share
        decode_s += (r.timings.finished - first) * share
        if r.computed_tokens > 0:  # fanned-out duplicates computed nothing
            prompt += r.prompt_tokens
            cached += r.cached_tokens
            decoded += max(r.computed_tokens - (r.prompt_tokens - r.cached_tokens), 0)
    lat = np.array([r.timings.finished - r.timings.started for r in done])
    sizes: dict[str, int] = {}
    for r in done:
        sizes[str(r.batch_size)] = sizes.get(str(r.batch_size), 0) + 1
    return {
        "prefill_tokens_per_s": round(prompt / prefill_s, 1) if prefill_s > 0 else None,
        "decode_tokens_per_s": round(decoded / decode_s, 1) if decode_s > 0 else None,
        "cached_share": round(cached / prompt, 4) if prompt else 0.0,
        "latency_s": {f"p{q}": round(float(np.percentile(lat, q)), 4) for q in (50, 90, 99)},
        "batch_sizes": dict(sorted(sizes.items(), key=lambda kv: int(kv[0]))),
    }

"""Memory over time, sampled in a background thread: NVML on an NVIDIA GPU, else process RSS.

Each figure carries its source ("nvml", "torch.cuda", "rss") so a report never mixes a GPU's
memory with a CPU process's without saying so.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

import psutil


@dataclass(frozen=True)
class Sample:
    t: float  # time.time()
    rss_bytes: int  # this process and its children (the backend worker)
    gpu_bytes: int | None  # device memory used (NVML), None without a GPU


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


@dataclass
class MemorySampler:
    interval: float = 0.1
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self):
        self._proc = psutil.Process(os.getpid())
        self._nvml = _nvml_handle()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def source(self) -> str:
        return "nvml" if self._nvml is not None else "rss"

    def sample(self) -> Sample:
        gpu = None
        if self._nvml is not None:
            import pynvml

            gpu = int(pynvml.nvmlDeviceGetMemoryInfo(self._nvml).used)
        rss = self._proc.memory_info().rss
        for child in self._proc.children(recursive=True):
            try:
                rss += child.memory_info().rss
            except psutil.NoSuchProcess:  # exited between listing and reading: it holds nothing now
                continue
        s = Sample(time.time(), rss, gpu)
        self.samples.append(s)
        return s

    def _loop(self):
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> "MemorySampler":
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="effbench-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    def peak(self, t0: float = 0.0, t1: float = float("inf")) -> int:
        """Peak bytes over [t0, t1] from the primary source (GPU memory on a GPU, else RSS).
        The samples just outside the window count too: a window shorter than the sampling
        interval still gets the memory level it ran at."""
        before = [s for s in self.samples if s.t < t0][-1:]
        after = [s for s in self.samples if s.t > t1][:1]
        window = before + [s for s in self.samples if t0 <= s.t <= t1] + after
        vals = [(s.gpu_bytes if s.gpu_bytes is not None else s.rss_bytes) for s in window]
        return max(vals) if vals else 0

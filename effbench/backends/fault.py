"""A fault-injecting backend for testing deadline handling: the HF backend, plus a delay per
batch, a hang (sleeps forever) or a crash (the process exits at once, as an OOM kill would) at a
chosen batch. Configured through the manifest's `[backend_args]`; never a default."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

from effbench.backends.hf import HFBackend
from effbench.contracts import GenerationRequest, GenerationResult
from effbench.submission import Submission
from effbench.worker import WARM_UP_ID


class FaultBackend(HFBackend):
    name = "fault"

    def __init__(
        self,
        submission: Submission,
        *,
        cache_dir: Path | None = None,
        delay_s: float = 0.0,
        hang_on_batch: int | None = None,
        crash_on_batch: int | None = None,
        raise_on_batch: int | None = None,
        **hf_args,
    ):
        super().__init__(submission, cache_dir=cache_dir, **hf_args)  # prefix_reuse, prefix_cache_entries
        self.delay_s = delay_s
        self.hang_on_batch = hang_on_batch
        self.crash_on_batch = crash_on_batch
        self.raise_on_batch = raise_on_batch
        self.batches = 0

    def generate(self, batch: Sequence[GenerationRequest]) -> list[GenerationResult]:
        if batch and batch[0].id == WARM_UP_ID:  # the worker's warm-up is not one of the run's batches
            return super().generate(batch)
        self.batches += 1
        if self.batches == self.crash_on_batch:
            os._exit(13)  # no cleanup, no exception: like a segfault or the OOM killer
        if self.batches == self.raise_on_batch:
            raise RuntimeError("injected backend error")
        if self.batches == self.hang_on_batch:
            while True:
                time.sleep(3600)
        time.sleep(self.delay_s)
        return super().generate(batch)

"""Own the CPU: the threading policy of a process that runs a model (the backend worker, `effbench
serve`, and effbench's own parent process).

torch's GNU OpenMP runtime spin-waits between parallel regions by default. That is fastest on
cores nobody else wants, and collapses when anything else does (another job, HELM scoring in the
parent, the telemetry thread): the spinning threads hold the cores the waiting ones need. A
yielding wait (OMP_WAIT_POLICY=PASSIVE) keeps a fair share under load; README "Own the CPU" gives
the figures and bench/test_cpu_policy.py measures them. A user's own OMP_WAIT_POLICY and OMP_NUM_THREADS are kept.

One OpenMP runtime per process: scikit-learn (brought by HELM) bundles its own libgomp, which
transformers loads when scikit-learn is importable; sentencepiece bundles another. A backend
worker needs neither (a fast tokenizer, tokenizer.json, runs in Rust), so they are made
unimportable there before anything loads. The runtimes actually mapped are read back from
/proc/self/maps and recorded in results.json's environment.

Everything here must run before torch is imported: the runtime reads its environment once, when
it loads.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

# What the policy sets where the user set nothing.
DEFAULT_WAIT_POLICY = "PASSIVE"
# Modules that bring a second OpenMP runtime and that a backend worker does not need.
SECOND_RUNTIMES = ("sklearn", "sentencepiece")
_SET_BY_US = "EFFBENCH_OMP_WAIT_POLICY"  # marks a value effbench set (a parent's, inherited) from a user's
_OPENMP = re.compile(r"/(lib(?:g|i)?omp[\w.-]*\.so[\w.]*)$")


def cores() -> int:
    """The cores this process may run on (its affinity mask: a container's or taskset's share),
    not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def set_wait_policy() -> str:
    """OMP_WAIT_POLICY for this process and its children: the user's if set, else PASSIVE.
    Returns who chose it ("user" or "effbench"); too late where torch is loaded already."""
    if "OMP_WAIT_POLICY" in os.environ:
        return "effbench" if os.environ.get(_SET_BY_US) == os.environ["OMP_WAIT_POLICY"] else "user"
    os.environ["OMP_WAIT_POLICY"] = os.environ[_SET_BY_US] = DEFAULT_WAIT_POLICY  # children inherit both
    return "effbench"


def block_second_runtimes(tokenizer_dir: Path | None) -> list[str]:
    """Make the modules of SECOND_RUNTIMES unimportable in this process (a None entry in
    sys.modules: importlib then finds no such module, so transformers treats them as absent).
    sentencepiece stays where the tokenizer has no tokenizer.json: a slow tokenizer needs it."""
    blocked = []
    for name in SECOND_RUNTIMES:
        if name == "sentencepiece" and (tokenizer_dir is None or not (tokenizer_dir / "tokenizer.json").is_file()):
            continue
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]
            blocked.append(name)
    return blocked


def openmp_runtimes() -> list[str]:
    """The OpenMP runtimes mapped into this process, by file name (Linux; [] elsewhere)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    return sorted({m.group(1) for line in maps.splitlines() if (m := _OPENMP.search(line.strip()))})


def user_threads() -> int | None:
    """The thread count the user fixed with OMP_NUM_THREADS (a positive integer), else None."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def set_torch_threads() -> int | None:
    """torch's intra-op threads = the cores of the affinity mask (torch counts the machine's), or
    the user's OMP_NUM_THREADS, kept like a user's wait policy: which count is faster beside other
    work depends on the model (README, "Own the CPU")."""
    if "torch" not in sys.modules:
        return None
    import torch

    n = user_threads() or cores()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def policy_report(chosen_by: str, blocked: list[str]) -> dict:
    """What results.json's environment records about this process's threads."""
    torch = sys.modules.get("torch")
    return {
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "chosen_by": chosen_by,
        "preloaded": os.environ.get("LD_PRELOAD") or None,
        "openmp_runtimes": openmp_runtimes(),
        "blocked_modules": blocked,
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "cores": cores(),
    }

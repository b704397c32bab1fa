"""`python -m effbench.kernels [--full] [--cache-dir DIR]`: measure this machine, print its profile
next to the datasheet targets, with the conditions of every measured number."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from effbench.hardware import DATASHEETS, DTYPES, GiB, HardwareProfile, measure_here


def _fmt(x: float, unit: str) -> str:
    return f"{x / 1e12:.3g} T{unit}" if x >= 1e12 else f"{x / 1e9:.3g} G{unit}"


def profile_table(here: HardwareProfile, targets: list[HardwareProfile]) -> Table:
    """Rows: memory, bandwidth, matmul FLOP/s per dtype; columns: this machine, then the targets."""
    cols = [here, *targets]
    table = Table(title=f"{here.name}: {here.notes}")
    table.add_column("metric")
    for p in cols:
        table.add_column(f"{p.name}\n({p.source})", justify="right")
    table.add_row("memory", *[f"{p.memory_bytes / GiB:.1f} GiB" for p in cols])
    table.add_row("bandwidth", *[_fmt(p.bandwidth_bytes_per_s, "B/s") for p in cols])
    for dt in DTYPES:
        table.add_row(f"matmul {dt}", *[_fmt(p.flops[dt], "FLOP/s") for p in cols])
    return table


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m effbench.kernels", description=__doc__)
    ap.add_argument("--full", action="store_true", help="larger sizes and more repetitions")
    ap.add_argument("--cache-dir", type=Path, default=None, help="reuse / store the measurement here (default: measure fresh)")
    args = ap.parse_args(argv)
    here = measure_here(quick=not args.full, cache_dir=args.cache_dir)
    console = Console()
    console.print(profile_table(here, list(DATASHEETS.values())))
    console.print(f"memory: total {'RAM (psutil)' if here.kind == 'cpu' else 'GPU memory (torch.cuda.mem_get_info)'}")
    for key, text in here.conditions.items():  # the conditions of each measured number
        console.print(f"{key}: {text}", soft_wrap=True)


if __name__ == "__main__":
    main()

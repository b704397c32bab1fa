"""What `effbench kernels` prints: this machine's measured profile next to the datasheet targets,
with the conditions of every measured number."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from effbench.predict.hardware import DATASHEETS, DTYPES, GiB, HardwareProfile, measure_here


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


def print_profile(here: HardwareProfile, console: Console) -> None:
    console.print(profile_table(here, list(DATASHEETS.values())))
    console.print(f"memory: total {'RAM (psutil)' if here.kind == 'cpu' else 'GPU memory (torch.cuda.mem_get_info)'}")
    for key, text in here.conditions.items():  # the conditions of each measured number
        console.print(f"{key}: {text}", soft_wrap=True)

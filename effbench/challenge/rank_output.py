"""`effbench rank`'s side of files and screen: rank results.json files (read by
effbench/challenge/rank_input.py, scored by effbench/challenge/rank.py), write the ranking as
JSON, print it as one table per track.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from effbench.atomic import write_json_atomic
from effbench.challenge.rank import Ranking, rank_results
from effbench.challenge.rank_input import read_all
from effbench.contracts import EffbenchError


def rank_files(paths: Sequence[Path]) -> Ranking:
    datas, sources = read_all(paths)
    return rank_results(datas, sources)


def write_json(ranking: Ranking, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, ranking.to_json())
    except OSError as e:
        raise EffbenchError(f"{path}: cannot write the ranking ({e.strerror or e})") from None


def _fmt(x: float) -> str:
    return f"{x:.4f}" if x == 0 or abs(x) >= 1e-4 else f"{x:.2e}"


def print_ranking(ranking: Ranking, console) -> None:
    """One rich table per track, then the open/closed Spearman correlation."""
    from rich.markup import escape
    from rich.table import Table

    for t in ranking.tracks:
        table = Table(title=f"track {escape(t.track)}", title_justify="left")
        table.add_column("rank", justify="right")
        table.add_column("submission")
        for s, w in t.suites.items():
            table.add_column(f"{escape(s)} (x{w:.3g})", justify="right")
        table.add_column("final", justify="right", style="bold")
        for sub in t.submissions:
            cells = [_fmt(sc.score) + ("" if sc.source else " (no results)") for sc in sub.suites.values()]
            table.add_row(str(sub.rank), escape(sub.name), *cells, _fmt(sub.final))
        console.print(table)
        c = t.spearman
        if c.rho is None:
            console.print(f"Spearman open vs closed: n/a ({escape(c.reason or '')})")
        else:
            console.print(f"Spearman open ({escape(c.open_suite)}) vs closed ({escape(c.closed_suite)}), "
                          f"{c.n} submissions: rho = {c.rho:+.3f} (p = {c.pvalue:.3g})")

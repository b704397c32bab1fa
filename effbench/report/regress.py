"""Regression tracking on top of pytest-benchmark: compare the figures a benchmark run tracked
(`extra_info["tracked"]`, see bench/test_tracked.py) with a baseline run kept in the repo, and
fail when one got worse by more than its threshold.

Why not `--benchmark-compare-fail`: it compares timing statistics only, one threshold for all;
effbench tracks throughputs (higher is better) and the predictor's error (an absolute figure)
next to times, each with a threshold chosen above its own measured run-to-run noise.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

from effbench.contracts import EffbenchError


@dataclass(frozen=True)
class Threshold:
    relative: float | None = None  # allowed worsening as a fraction of the baseline
    absolute: float | None = None  # allowed worsening in the figure's own unit


@dataclass(frozen=True)
class Comparison:
    name: str
    unit: str
    better: str
    baseline: float | None
    current: float | None
    limit: float | None  # the worst value that still passes
    regressed: bool
    note: str = ""

    @property
    def change(self) -> float | None:
        if self.baseline in (None, 0) or self.current is None:
            return None
        return self.current / self.baseline - 1


def tracked_figures(path: Path) -> dict[str, dict]:
    """name -> {"value", "better", "unit"} from a pytest-benchmark JSON (--benchmark-json)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise EffbenchError(f"{path}: not found (write it with pytest --benchmark-json={path})") from None
    except json.JSONDecodeError as e:
        raise EffbenchError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise EffbenchError(f"{path}: field 'benchmarks': missing; not a pytest-benchmark JSON file")
    out: dict[str, dict] = {}
    for b in data["benchmarks"]:
        for name, fig in (b.get("extra_info") or {}).get("tracked", {}).items():
            if not isinstance(fig, dict) or fig.get("better") not in ("higher", "lower") or not isinstance(fig.get("value"), (int, float)):
                raise EffbenchError(f"{path}: field 'benchmarks[{b.get('name')}].extra_info.tracked.{name}':"
                                    " needs a numeric value and better = higher or lower")
            out[name] = fig
    return out


def load_thresholds(path: Path) -> tuple[Threshold, dict[str, Threshold]]:
    """(default, per figure) from a TOML file: [default] and [figures.NAME], each relative= or absolute=."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise EffbenchError(f"{path}: not found") from None
    except tomllib.TOMLDecodeError as e:
        raise EffbenchError(f"{path}: not valid TOML ({e})") from None

    def one(where: str, d) -> Threshold:
        if not isinstance(d, dict) or set(d) - {"relative", "absolute"} or not d:
            raise EffbenchError(f"{path}: field '{where}': give relative = FRACTION and/or absolute = VALUE")
        for k, v in d.items():
            if not isinstance(v, (int, float)) or v < 0:
                raise EffbenchError(f"{path}: field '{where}.{k}': {v!r} is not a non-negative number")
        return Threshold(d.get("relative"), d.get("absolute"))

    default = one("default", data.get("default", {"relative": 0.25}))
    figures = {name: one(f"figures.{name}", d) for name, d in data.get("figures", {}).items()}
    return default, figures


def compare(current: dict[str, dict], baseline: dict[str, dict], default: Threshold,
            per_figure: dict[str, Threshold]) -> list[Comparison]:
    """Every baseline figure against the current run; a figure the current run lacks is a failure
    (a benchmark that stopped running must not pass silently). Where a figure has both a relative
    and an absolute threshold, the looser one applies."""
    out = []
    for name in sorted(set(baseline) | set(current)):
        base, cur = baseline.get(name), current.get(name)
        if base is None:
            out.append(Comparison(name, cur["unit"], cur["better"], None, cur["value"], None, False, "new: not in the baseline"))
            continue
        if cur is None:
            out.append(Comparison(name, base["unit"], base["better"], base["value"], None, None, True, "missing from this run"))
            continue
        th = per_figure.get(name, default)
        b, sign = base["value"], (1 if base["better"] == "lower" else -1)
        slack = max((abs(b) * th.relative) if th.relative is not None else 0.0, th.absolute or 0.0)
        limit = b + sign * slack
        regressed = cur["value"] > limit if sign > 0 else cur["value"] < limit
        out.append(Comparison(name, base["unit"], base["better"], b, cur["value"], limit, regressed))
    return out

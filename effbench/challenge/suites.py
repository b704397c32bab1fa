"""Suites: TOML files of HELM run entries with a budget, a weight and the metric columns that
rank submissions (scenarios/*.toml).

A run entry belongs to a scenario (a leaderboard group: "mmlu" gathers 57 subject runs); each
scenario names its metric columns, as `metric` or `metric@robustness` / `metric@fairness` for the
worst case over HELM's perturbations of that kind, and which of them are lower-is-better.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from effbench.contracts import EffbenchError
from effbench.submission import validation_line

SUITES_DIR = Path(__file__).resolve().parents[2] / "scenarios"


class SuiteRun(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entry: str = Field(min_length=1, description="HELM run-entry description without model=")
    scenario: str | None = Field(None, description="scenario group; default: the entry's HELM scenario name")
    max_eval_instances: int | None = Field(None, ge=1)

    @property
    def group(self) -> str:
        return self.scenario or self.entry.split(":", 1)[0]


class ScenarioColumns(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metrics: list[str] = Field(min_length=1)
    lower_is_better: list[str] = Field(default_factory=list)


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][\w.-]*$", max_length=100, description="also a folder name under --out")
    description: str = ""
    budget_minutes: float = Field(gt=0)
    weight: float = Field(1.0, ge=0)
    max_eval_instances: int | None = Field(None, ge=1)
    scenarios: dict[str, ScenarioColumns] = Field(default_factory=dict)
    runs: list[SuiteRun] = Field(min_length=1)

    @model_validator(mode="after")
    def _lower_is_better_are_columns(self) -> "Suite":
        for name, cols in self.scenarios.items():
            extra = set(cols.lower_is_better) - set(cols.metrics)
            if extra:
                raise ValueError(f"scenarios.{name}.lower_is_better names {sorted(extra)}, which are not in its metrics")
        return self

    def entries(self) -> list[tuple[str, int | None]]:
        return [(r.entry, r.max_eval_instances) for r in self.runs]

    def group_of(self, entry: str) -> str:
        return next(r.group for r in self.runs if r.entry == entry)

    def columns(self, group: str, main_metric: str | None) -> ScenarioColumns | None:
        """A scenario's metric columns: declared in the suite, else the run's main metric."""
        if group in self.scenarios:
            return self.scenarios[group]
        return ScenarioColumns(metrics=[main_metric]) if main_metric else None


# What HELM makes of an entry before it runs, for sizing a suite without loading its data:
# run expanders that turn one entry into several runs, and requests per instance under augmentation.
RUNS_PER_ENTRY = {"max_train_instances=big_bench_few_shot_setting": 4}  # 0, 1, 2, 3 in-context examples
REQUESTS_PER_INSTANCE = {"data_augmentation=canonical": 5}  # original + mild_mix + dialect, gender, person name


def suite_size(suite: Suite) -> tuple[int, int | None, int | None]:
    """(runs, instances, most requests) of a suite; None where an entry has no instance limit."""
    runs, instances, requests = 0, 0, 0
    for r in suite.runs:
        k = next((v for key, v in RUNS_PER_ENTRY.items() if key in r.entry), 1)
        m = next((v for key, v in REQUESTS_PER_INSTANCE.items() if key in r.entry), 1)
        n = r.max_eval_instances or suite.max_eval_instances
        runs += k
        if n is None or instances is None:
            instances = requests = None
            continue
        instances += n
        requests += n * k * m
    return runs, instances, requests


def available_suites() -> dict[str, Path]:
    return {p.stem: p for p in sorted(SUITES_DIR.glob("*.toml"))}


def load_suite(name_or_path: str) -> Suite:
    """A built-in suite by name (scenarios/<name>.toml) or any suite file by path."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        known = available_suites()
        if name_or_path not in known:
            raise EffbenchError(f"--suite: unknown suite {name_or_path!r}; built-in: {', '.join(known) or 'none'} (or give a .toml path)")
        path = known[name_or_path]
    if not path.is_file():
        raise EffbenchError(f"{path}: suite file does not exist (option --suite)")
    try:
        return Suite.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise EffbenchError(f"{path}: not valid TOML: {e}") from None
    except ValidationError as e:
        raise EffbenchError(validation_line(path, e)) from None

"""Suites: TOML files of HELM run entries with a budget and a weight (scenarios/*.toml)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from effbench.contracts import EffbenchError

SUITES_DIR = Path(__file__).resolve().parent.parent / "scenarios"


class SuiteRun(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entry: str = Field(min_length=1, description="HELM run-entry description without model=")
    max_eval_instances: int | None = Field(None, ge=1)


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    budget_minutes: float = Field(gt=0)
    weight: float = Field(1.0, ge=0)
    max_eval_instances: int | None = Field(None, ge=1)
    runs: list[SuiteRun] = Field(min_length=1)

    def entries(self) -> list[tuple[str, int | None]]:
        return [(r.entry, r.max_eval_instances) for r in self.runs]


def available_suites() -> dict[str, Path]:
    return {p.stem: p for p in sorted(SUITES_DIR.glob("*.toml"))}


def load_suite(name_or_path: str) -> Suite:
    """A built-in suite by name (scenarios/<name>.toml) or any suite file by path."""
    path = Path(name_or_path)
    if not path.suffix == ".toml":
        known = available_suites()
        if name_or_path not in known:
            raise EffbenchError(f"--suite: unknown suite {name_or_path!r}; built-in: {', '.join(known) or 'none'} (or give a .toml path)")
        path = known[name_or_path]
    if not path.is_file():
        raise EffbenchError(f"{path}: suite file does not exist (option --suite)")
    try:
        return Suite.model_validate(tomllib.loads(path.read_text()))
    except tomllib.TOMLDecodeError as e:
        raise EffbenchError(f"{path}: not valid TOML: {e}") from None
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise EffbenchError(f"{path}: field '{field}': {err['msg']}") from None

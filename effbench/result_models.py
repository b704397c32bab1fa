"""The files of a run's output folder as pydantic models: results.json (`Results`, and `ResultsV1`
for files written before the suite score), run_config.json (`RunConfig`) and check.json
(`CheckReport`). effbench/results.py owns reading them; effbench/schemas/results.schema.json is
generated from `Results` (`python -m effbench.results --write-schema`), never edited by hand.

Every object allows keys it does not name: new fields may appear within a schema version. A field
that may be absent but never null is `absent()`: no default in the schema, None only in Python.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt

from effbench.contracts import Order, Semantics

RunStatus = Literal["finished", "partial", "not_started", "failed", "not_run"]
TIMELINE_COLUMNS = ("t", "rss_bytes", "cpu_seconds", "gpu_bytes", "gpu_util", "power_w")


def _no_default(schema: dict) -> None:
    schema.pop("default", None)


def absent(description: str | None = None) -> Any:
    """A field a file may leave out but never sets to null (older files, optional figures)."""
    return Field(default=None, description=description, json_schema_extra=_no_default)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


# ---------------------------------------------------------------- results.json


class SubmissionInfo(_Open):
    name: str
    folder: str
    manifest: dict[str, Any]


class BackendInfo(_Open):
    name: str
    model_dir: str
    merged_this_run: bool
    device: str
    load_seconds: NonNegativeFloat
    merge_seconds: NonNegativeFloat = absent()
    warm_up_seconds: NonNegativeFloat = absent()
    process: Literal["worker", "in-process"]
    launched_after_s: Optional[float] = Field(None, description="seconds into the plan phase when the worker was launched"
                                              " (it loads the model while HELM plans)")
    loaded_for_an_earlier_suite: bool = absent("the worker was loaded by an earlier suite of the same command"
                                               " (`effbench run --suite a,b`); load_seconds is that load")


class Budget(_Open):
    minutes: Optional[float] = Field(description="null: no deadline")
    order: Order
    semantics: Semantics
    deadline_hit: bool
    elapsed_s: NonNegativeFloat
    cancelled: NonNegativeInt
    not_started: NonNegativeInt
    worker_restarts: NonNegativeInt = absent()
    crashes: list[str] = absent()
    resumed_results: NonNegativeInt = absent()
    journal: str = absent("relative to the output folder")
    stopped: Optional[str] = Field(None, description="why execution ended before every request was tried: deadline,"
                                   " interrupted (SIGINT/SIGTERM), or the worker could not be restarted")


class Columns(_Open):
    metrics: list[str] = Field(min_length=1)
    lower_is_better: list[str]


class SuiteInfo(_Open):
    name: str
    budget_minutes: float
    weight: float
    max_eval_instances: Optional[int] = None
    max_eval_instances_cap: Optional[int] = None
    scenarios: dict[str, Columns] = Field(description="the metric columns of each scenario (effbench rank's columns)")


class RunRecord(_Open):
    """One HELM run: a finished one scored by HELM, a lost or not run one with score 0."""

    name: str
    entry: str
    scenario: str
    status: RunStatus
    reason: str = absent()
    main_metric: Optional[str]
    score: Optional[float] = Field(description="the main metric; 0 for a run lost or not run")
    metrics: dict[str, Optional[float]]
    requests: NonNegativeInt
    answered: NonNegativeInt = absent()
    failed: NonNegativeInt = absent()
    unanswered: NonNegativeInt = absent()
    errors: NonNegativeInt
    first_error: Optional[str] = None
    prompt_tokens: NonNegativeInt
    output_tokens: NonNegativeInt
    computed_prompt_tokens: NonNegativeInt = absent()
    wall_seconds: float = absent()
    busy_seconds: float = absent()
    tokens_per_s: Optional[float] = None
    output_tokens_per_s: Optional[float] = None
    prefill_tokens_per_s: Optional[float] = None
    decode_tokens_per_s: Optional[float] = None
    cached_share: float = absent("share of the prompt tokens served from a shared prefix's cache")
    latency_s: Optional[dict[str, float]] = None
    batch_sizes: dict[str, int] = absent()
    peak_memory_bytes: Optional[int] = None
    helm_run_dir: Optional[str] = Field(description="null when HELM wrote no folder (not run, or lost whole)")
    notes: list[str] = absent()


class _TotalsBase(_Open):
    runs: int
    not_run: int = absent()
    unfinished: int = absent()
    requests: int
    answered: int = absent()
    unanswered: int = absent()
    errors: int
    prompt_tokens: int
    output_tokens: int
    computed_prompt_tokens: NonNegativeInt = absent("prompt tokens run through the model; the rest came from a shared"
                                                    " prefix's cache")
    execute_seconds: float
    tokens_per_s: Optional[float] = None
    output_tokens_per_s: Optional[float] = None
    peak_memory_bytes: int


class Totals(_TotalsBase):
    suite_score: Optional[float] = Field(description="the suite's score: per scenario the mean of its runs' scores (a"
                                         " run lost or not run counts 0), then the mean over scenarios (score.suite_score)")
    mean_run_score: Optional[float] = Field(description="mean of the runs' scores, runs without one left out")


class TotalsV1(_TotalsBase):
    mean_score: Optional[float] = absent("what v2 calls mean_run_score")


class Profile(_Open):
    source: Literal["cpu", "nvml"]
    phases: dict[str, Any]
    allocator: dict[str, Any] = absent()


Sample = tuple[NonNegativeFloat, NonNegativeInt, NonNegativeFloat, Optional[int], Optional[float], Optional[float]]


class Timeline(_Open):
    """Telemetry over the whole run (plan to score), thinned, for the HTML report's plots."""

    source: Literal["cpu", "nvml"]
    t0: float = Field(description="epoch seconds at the start of the first phase; sample times are relative to it")
    columns: tuple[Literal["t"], Literal["rss_bytes"], Literal["cpu_seconds"], Literal["gpu_bytes"],
                   Literal["gpu_util"], Literal["power_w"]]
    samples: list[Sample]


class CpuPolicy(_Open):
    """The backend process's threads (effbench/execute/cpu.py): absent in results of older runs."""

    omp_wait_policy: Optional[str]
    chosen_by: str = Field(description="'effbench' (its default) or 'user' (OMP_WAIT_POLICY was set)")
    preloaded: Optional[str] = Field(description="LD_PRELOAD of the backend process (Intel's OpenMP for vLLM on a CPU)")
    openmp_runtimes: list[str] = Field(description="OpenMP runtimes mapped into the backend process")
    blocked_modules: list[str]
    torch_threads: Optional[int]
    cores: int = Field(description="cores in the backend process's affinity mask")


class Environment(_Open):
    effbench: str
    python: str
    versions: dict[str, Optional[str]]
    device: str
    cpu_policy: Optional[CpuPolicy] = None


class Results(_Open):
    """What `effbench run` writes to OUT/results.json. schema_version changes when a field changes
    meaning or goes away; new fields may appear within a version."""

    model_config = ConfigDict(title="effbench results.json")

    schema_version: Literal[2]
    track: str = Field(description="hardware track the run stands for (effbench rank groups by it)")
    submission: SubmissionInfo
    backend: BackendInfo
    budget: Budget
    suite: SuiteInfo
    runs: list[RunRecord]
    totals: Totals
    phases: dict[str, NonNegativeFloat]
    memory_source: Literal["rss", "nvml"]
    profile: Profile
    timeline: Timeline = absent("absent in results written before it")
    environment: Environment
    data_dir: Optional[str] = None
    datasets_staged: list[str] = absent()
    helm_output: str
    created: str


class ResultsV1(Results):
    """results.json before the suite score (totals.mean_score was the mean over runs): still read,
    upgraded to the current version on load (results.upgrade_v1)."""

    schema_version: Literal[1]  # type: ignore[assignment]
    totals: TotalsV1  # type: ignore[assignment]


# ---------------------------------------------------------------- run_config.json


class RunConfig(_Open):
    """What --resume needs to rebuild the same plan (results.save_run_config). Version 1 had no
    "version" key and stored paths as given on the command line; options are RunOptions' fields
    (effbench/plan.py), checked against it on load."""

    version: Literal[1, 2] = 1
    submission: str
    suite: str
    backend: Optional[str] = None
    allow_pickle: bool
    trust_remote_code: bool
    allow_outside_paths: bool = False
    options: dict[str, Any]


# ---------------------------------------------------------------- check.json


class CheckRun(_Open):
    name: str
    requests: int = absent()
    probed: int = absent()
    projected_finish_min: Optional[float] = None
    answered_within_budget: int = absent()
    past_budget: bool = absent()
    probe_score: Optional[float] = None


class ProjectedMinutes(_Open):
    median: float
    p05: float
    p95: float


class ExpectedScore(_Open):
    """Suite scores (score.suite_score) from the probe's scores: every run finished, and what the
    budget keeps."""

    if_all_finish: float
    within_budget: float
    lost: float


class CheckReport(_Open):
    """What `effbench check` writes to its folder's check.json (effbench/predict/check.py). Only
    what `effbench report --prediction` needs is required."""

    verdict: Literal["PASS", "AT RISK", "FAIL"] = absent()
    suite: str = absent()
    track: str
    budget_minutes: float
    projected_minutes: ProjectedMinutes
    runs: list[CheckRun]
    hardware: dict[str, Any] = absent()
    expected_score: ExpectedScore = absent()
    not_run: dict[str, str] = absent()
    contention: Optional[dict[str, Any]] = absent()  # effbench/predict/contention.py Contention.to_json

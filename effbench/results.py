"""The files of a run's output folder, and the one place that reads them: results.json (checked
against its pydantic model, effbench/result_models.py; older versions upgraded on load),
run_config.json (what --resume needs) and check.json (what `effbench check` wrote).

`python -m effbench.results --write-schema` regenerates effbench/schemas/results.schema.json from
the model; tests/test_results_schema.py fails while the checked-in file differs from it.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import fields
from functools import lru_cache
from pathlib import Path
from importlib import metadata
from typing import TYPE_CHECKING, Any, Sequence

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.json_schema import GenerateJsonSchema

from effbench import __version__
from effbench.atomic import write_json_atomic, write_text_atomic
from effbench.challenge.suites import Suite
from effbench.contracts import EffbenchError
from effbench.execute.journal import JOURNAL_NAME, journaled_results
from effbench.plan import RunOptions, config_path
from effbench.result_models import CheckReport, Results, ResultsV1, RunConfig
from effbench.score import columns_of, mean_run_score, suite_score, totals
from effbench.submission import Submission

if TYPE_CHECKING:
    from effbench.execute.scheduler import ExecutionReport
    from effbench.predict.profiler import Telemetry
    from effbench.runner import Phase

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "results.schema.json"

# 2: totals.suite_score (the suite's score) and totals.mean_run_score (was mean_score).
RESULTS_SCHEMA_VERSION = 2
RESULTS_MODELS: dict[int, type[Results]] = {1: ResultsV1, RESULTS_SCHEMA_VERSION: Results}


class _FileSchema(GenerateJsonSchema):
    def field_title_should_be_set(self, schema) -> bool:
        return False  # "Prompt Tokens" next to "prompt_tokens" says nothing


def results_schema() -> dict:
    """The JSON Schema of results.json, generated from `Results` (what is checked in)."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "effbench/results.schema.json",
            **Results.model_json_schema(schema_generator=_FileSchema)}


def schema_text() -> str:
    return json.dumps(results_schema(), indent=2) + "\n"


def _first_error(e: ValidationError) -> tuple[str, str]:
    err = e.errors(include_url=False)[0]
    return "/".join(str(p) for p in err["loc"]) or "(top level)", err["msg"].replace("\n", " ")


def _check(model: type[BaseModel], text: str, file: Path, what: str) -> None:
    try:
        model.model_validate_json(text, strict=True)
    except ValidationError as e:
        where, msg = _first_error(e)
        raise EffbenchError(f"{file}: field '{where}': {msg} ({what})") from None


def _read(file: Path, absent: str) -> tuple[Any, str]:
    """(parsed, text) of a JSON file of an output folder, or one line: `absent` when it is not
    there, the line and column of a syntax error otherwise."""
    if not file.is_file():
        raise EffbenchError(f"{file}: {absent}")
    try:
        text = file.read_text(encoding="utf-8")
        return json.loads(text), text
    except json.JSONDecodeError as e:
        raise EffbenchError(f"{file}: line {e.lineno}, column {e.colno}: not valid JSON ({e.msg})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise EffbenchError(f"{file}: cannot read it ({type(e).__name__}: {e})".replace("\n", " ")) from None


def read_json_file(file: Path, absent: str) -> Any:
    """A JSON file of effbench's (parsed), or one line naming it: `absent` when it is not there."""
    return _read(file, absent)[0]


def results_file(path: Path) -> Path:
    """PATH itself, or the results.json in the folder PATH."""
    path = Path(path)
    if path.is_dir():
        return path / "results.json"
    if not path.exists():
        raise EffbenchError(f"{path}: no such file or folder (give a results.json or a folder holding one)")
    return path


def read_results(path: Path) -> dict:
    """results.json as it is on disk, not checked: for readers of a few fields that accept other
    writers' files too (effbench rank checks what it uses, effbench/challenge/rank.py)."""
    data, _ = _read(results_file(path), "no results.json here")
    return data


def validate(results: Any, source: Path, text: str | None = None) -> dict:
    """results.json checked against the model of its schema_version, and in the current version's
    shape; one line naming the file and the path of the first problem."""
    if not isinstance(results, dict):
        raise EffbenchError(f"{source}: field '(top level)': not a JSON object (results.json)")
    version = results.get("schema_version")
    model = RESULTS_MODELS.get(version) if type(version) is int else None
    if model is None:
        known = ", ".join(map(str, RESULTS_MODELS))
        raise EffbenchError(f"{source}: field 'schema_version': {version!r} is not a results.json version this effbench"
                            f" reads ({known})")
    _check(model, json.dumps(results) if text is None else text, source, f"results.json schema v{version}")
    return upgrade_v1(results) if version == 1 else results


def upgrade_v1(results: dict) -> dict:
    """v1 -> v2: totals.mean_score (the mean over runs) becomes mean_run_score, and suite_score,
    the headline since v2, comes from the runs as `effbench run` computes it now."""
    totals = {k: v for k, v in results["totals"].items() if k != "mean_score"}
    totals.update(suite_score=suite_score(results["runs"]), mean_run_score=mean_run_score(results["runs"]))
    return {**results, "schema_version": RESULTS_SCHEMA_VERSION, "totals": totals}


def load_results(path: Path) -> dict:
    """results.json (a file, or the one in a folder), checked and in the current version's shape."""
    file = results_file(path)
    results, text = _read(file, "no results.json here")
    return validate(results, file, text)


def finished_run(out: Path) -> dict | None:
    """The results.json of a run in OUT that has nothing left to do (every request answered, no
    stop, no deadline), or None: `--resume` of such a run says so instead of loading a model."""
    file = out / "results.json"
    if not file.is_file():
        return None
    written = file.stat().st_mtime_ns
    if any(f.is_file() and f.stat().st_mtime_ns > written for f in (out / JOURNAL_NAME, out / RUN_CONFIG)):
        return None  # the journal went on, or the run's options changed, after it was written: resume checks them
    results = load_results(out)
    t, b = results["totals"], results["budget"]
    if t["unfinished"] or t["unanswered"] or t["errors"] or b["stopped"] or b["deadline_hit"]:
        return None
    return results


def load_check(path: Path) -> dict:
    """check.json as `effbench check` writes it; a folder means the check.json inside it."""
    file = path / "check.json" if path.is_dir() else path
    check, text = _read(file, "no check.json here (--prediction takes an `effbench check` folder or its check.json)")
    if not isinstance(check, dict):
        raise EffbenchError(f"{file}: not an `effbench check` output (not a JSON object)")
    missing = [k for k, f in CheckReport.model_fields.items() if f.is_required() and k not in check]
    if missing:
        raise EffbenchError(f"{file}: not an `effbench check` output (no '{missing[0]}')")
    _check(CheckReport, text, file, "check.json of `effbench check`")
    return check


def completion_texts(out: Path) -> dict[str, list[str]]:
    """Run entry -> the first completion's text of each request, from HELM's run folders (for
    comparing two runs of the same plan)."""
    texts = {}
    for r in load_results(out)["runs"]:
        if r["helm_run_dir"] is None:
            continue
        state = json.loads((out / r["helm_run_dir"] / "scenario_state.json").read_text())
        texts[r["entry"]] = [s["result"]["completions"][0]["text"] for s in state["request_states"]]
    return texts


RUN_CONFIG = "run_config.json"
# 2: options.out is not stored; a path inside the output folder is stored relative to it, any
# other absolute. Version 1 (no "version" key) stored every path as given on the command line.
RUN_CONFIG_VERSION = 2
_CONFIG_PATHS = ("cache_dir", "data_dir")


def save_run_config(opts: RunOptions, submission: Submission, suite: str, overwrite: bool = False) -> None:
    """What `--resume` needs to rebuild the same plan: written before the first request. The
    command line's trust flags are kept, so a resume allows exactly what the start allowed.
    A folder that holds an earlier run's journal is refused unless `overwrite`: starting again
    would empty it (its results are the hours a --resume would keep)."""
    journal = opts.out / JOURNAL_NAME
    if journal.is_file() and not overwrite:
        raise EffbenchError(f"{opts.out} holds the journal of an earlier run ({journaled_results(journal)} results):"
                            f" use --resume {opts.out} to continue it, or --overwrite to start again")
    opts.out.mkdir(parents=True, exist_ok=True)
    suite_ref = config_path(Path(suite).resolve(), opts.out) if suite.endswith(".toml") else suite
    write_json_atomic(opts.out / RUN_CONFIG, {
        "version": RUN_CONFIG_VERSION,
        "submission": config_path(submission.folder, opts.out), "suite": suite_ref, "backend": submission.manifest.backend,
        "allow_pickle": submission.allow_pickle, "trust_remote_code": submission.trust_remote_code,
        "allow_outside_paths": submission.allow_outside_paths, "options": opts.to_json(),
    })


@lru_cache(maxsize=1)
def _run_options() -> TypeAdapter:
    return TypeAdapter(RunOptions)


def load_run_config(out: Path) -> dict:
    """run_config.json of the run in OUT, with OUT as given (relative or absolute, wherever the
    folder is now) as options.out, never a path stored in it; relative paths resolved against it.
    Its options are checked against RunOptions (effbench/plan.py), so a resume never fails later
    on a bad or unknown option."""
    file = out / RUN_CONFIG
    config, text = _read(file, "missing; --resume needs the folder of a run started by effbench run")
    _check(RunConfig, text, file, RUN_CONFIG)
    if config.get("version", 1) >= 2:  # version 1: paths as given on the command line that started it
        inside = lambda v: str(out / v) if v is not None and not Path(v).is_absolute() else v  # noqa: E731
        config["submission"] = inside(config["submission"])
        if config["suite"].endswith(".toml"):
            config["suite"] = inside(config["suite"])
        config["options"] = {**config["options"], **{k: inside(config["options"].get(k)) for k in _CONFIG_PATHS}}
    config["options"] = {**config["options"], "out": str(out)}
    known = {f.name for f in fields(RunOptions)}  # version 1 stored `resume` too
    if unknown := sorted(set(config["options"]) - known):
        raise EffbenchError(f"{file}: field 'options/{unknown[0]}': not an option of this effbench's `effbench run`")
    try:
        _run_options().validate_python(config["options"])
    except ValidationError as e:
        where, msg = _first_error(e)
        raise EffbenchError(f"{file}: field 'options/{where}': {msg} ({RUN_CONFIG})") from None
    return config


def environment(device: str, cpu_policy: dict | None = None) -> dict:
    def v(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    env = {
        "effbench": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "versions": {d: v(d) for d in ("crfm-helm", "torch", "transformers", "peft", "tokenizers", "bitsandbytes")},
        "device": device,
        "cpu_policy": cpu_policy,  # the backend process's threads (effbench/execute/cpu.py)
    }
    if device == "cuda":
        import torch

        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def build_results(submission: Submission, suite: Suite, opts: RunOptions, staged: list[str], *, info: dict,
                  launched: list[float], shared: bool, phases: Sequence[Phase], budget_min: float | None,
                  report: ExecutionReport, spent: float, resumed: int, runs: list[dict], sampler: Telemetry,
                  allocator: dict) -> dict:
    """results.json's content (result_models.Results) from what `effbench run` measured:
    run records and totals (effbench/score.py), phases, budget, backend, profile, environment."""
    execute = next(p for p in phases if p.name == "execute")
    groups = sorted({r["scenario"] for r in runs})
    out = {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "track": opts.track,
        "submission": {"name": submission.name, "folder": str(submission.folder), "manifest": submission.manifest.model_dump()},
        "backend": {"name": info["name"], "model_dir": info["model_dir"], "merged_this_run": info["merged_now"],
                    "device": info["device"], "load_seconds": round(info["load_seconds"], 3),
                    "merge_seconds": round(info["merge_seconds"], 3), "warm_up_seconds": round(info["warm_up_seconds"], 3),
                    "process": "in-process" if opts.in_process else "worker",
                    "loaded_for_an_earlier_suite": shared and not launched,
                    # seconds into the plan phase when the worker started loading (it overlaps planning)
                    "launched_after_s": round(launched[0] - phases[0].start, 3) if launched else None},
        "budget": {
            "minutes": budget_min if budget_min and budget_min > 0 else None,
            "order": opts.order,
            "semantics": opts.semantics,
            "deadline_hit": report.deadline_hit,
            "elapsed_s": round(spent + report.ended - report.started, 3),
            "cancelled": len(report.cancelled),
            "not_started": len(report.not_started),
            "worker_restarts": report.restarts,
            "crashes": report.crashes,
            "stopped": report.stopped,
            "resumed_results": resumed,
            "journal": JOURNAL_NAME,  # relative to the output folder, as every path in it: the folder may move
        },
        "suite": {
            "name": suite.name,
            "budget_minutes": suite.budget_minutes,
            "weight": suite.weight,
            "max_eval_instances": suite.max_eval_instances,
            "max_eval_instances_cap": opts.max_eval_instances,
            "scenarios": {g: columns_of(suite, g, runs).model_dump() for g in groups if columns_of(suite, g, runs)},
        },
        "runs": runs,
        "totals": totals(runs, execute.seconds, sampler),
        "phases": {p.name: round(p.seconds, 3) for p in phases},
        "memory_source": "nvml" if sampler.source == "nvml" else "rss",
        "profile": {"source": sampler.source,
                    "phases": {p.name: sampler.summary(p.start, p.end) for p in phases},
                    "allocator": allocator},
        "timeline": sampler.timeline(phases[0].start),
        "environment": environment(info["device"], info["cpu"]),
        "data_dir": str(opts.data_dir) if opts.data_dir else None,
        "datasets_staged": staged,
        "helm_output": "helm",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return out


def write_results(out: Path, results: dict) -> Path:
    """OUT/results.json, whole or not at all; a full or read-only disk is one line saying what
    the journal keeps."""
    from effbench.execute.journal import out_error

    path = out / "results.json"
    try:
        write_json_atomic(path, results)
    except OSError as e:
        if (err := out_error(out, e)) is None:
            raise
        raise err from e
    return path


def write_check(out: Path, report: dict) -> Path:
    """OUT/check.json, whole or not at all: `effbench report RUN_OUT --prediction` reads it back
    (load_check) to draw the projection against a real run."""
    path = out / "check.json"
    write_json_atomic(path, report, default=str)
    return path


if __name__ == "__main__":
    if sys.argv[1:] != ["--write-schema"]:
        sys.exit("usage: python -m effbench.results --write-schema  (regenerates effbench/schemas/results.schema.json)")
    write_text_atomic(SCHEMA_PATH, schema_text())
    print(f"wrote {SCHEMA_PATH}")

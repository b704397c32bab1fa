"""The files of a run's output folder that effbench writes whole: results.json (read back and
checked against its versioned JSON Schema) and run_config.json (what --resume needs)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from effbench.atomic import write_json_atomic
from effbench.contracts import EffbenchError
from effbench.execute.journal import JOURNAL_NAME, journaled_results
from effbench.plan import RunOptions, config_path
from effbench.submission import Submission

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "results.schema.json"


@lru_cache(maxsize=1)
def schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def validate(results: dict, source: Path) -> None:
    """One line naming the file and the JSON path of the first problem."""
    import jsonschema

    errors = sorted(jsonschema.Draft202012Validator(schema()).iter_errors(results), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise EffbenchError(f"{source}: field '{where}': {e.message} (results.json schema v{schema()['properties']['schema_version']['const']})")


def _read_json(file: Path, absent: str) -> dict:
    """A JSON file of an output folder, or one line: `absent` when it is not there, the line of a
    syntax error otherwise."""
    if not file.is_file():
        raise EffbenchError(f"{file}: {absent}")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise EffbenchError(f"{file}:{e.lineno}: not valid JSON ({e.msg})") from None


def load_results(path: Path) -> dict:
    file = path / "results.json" if path.is_dir() else path
    results = _read_json(file, "no results.json here")
    validate(results, file)
    return results


def load_check(path: Path) -> dict:
    """check.json as `effbench check` writes it; a folder means the check.json inside it."""
    file = path / "check.json" if path.is_dir() else path
    check = _read_json(file, "no check.json here (--prediction takes an `effbench check` folder or its check.json)")
    missing = [k for k in ("projected_minutes", "runs", "track", "budget_minutes") if k not in check]
    if missing:
        raise EffbenchError(f"{file}: not an `effbench check` output (no '{missing[0]}')")
    return check


def completion_texts(out: Path) -> dict[str, list[str]]:
    """Run entry -> the first completion's text of each request, from HELM's run folders (for
    comparing two runs of the same plan)."""
    results = json.loads((out / "results.json").read_text())
    texts = {}
    for r in results["runs"]:
        if r["helm_run_dir"] is None:
            continue
        state = json.loads((out / r["helm_run_dir"] / "scenario_state.json").read_text())
        texts[r["entry"]] = [s["result"]["completions"][0]["text"] for s in state["request_states"]]
    return texts


RESULTS_SCHEMA_VERSION = 1


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


def load_run_config(out: Path) -> dict:
    """run_config.json of the run in OUT, with OUT as given (relative or absolute, wherever the
    folder is now) as options.out, never a path stored in it; relative paths resolved against it."""
    config = _read_json(out / RUN_CONFIG, "missing; --resume needs the folder of a run started by effbench run")
    if config.get("version", 1) >= 2:  # version 1: paths as given on the command line that started it
        inside = lambda v: str(out / v) if v is not None and not Path(v).is_absolute() else v  # noqa: E731
        config["submission"] = inside(config["submission"])
        if config["suite"].endswith(".toml"):
            config["suite"] = inside(config["suite"])
        config["options"] = {**config["options"], **{k: inside(config["options"].get(k)) for k in _CONFIG_PATHS}}
    config["options"] = {**config["options"], "out": str(out)}
    return config


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

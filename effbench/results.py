"""results.json: read back and checked against its versioned JSON Schema."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from effbench.contracts import EffbenchError

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


def load_results(path: Path) -> dict:
    file = path / "results.json" if path.is_dir() else path
    if not file.is_file():
        raise EffbenchError(f"{file}: no results.json here")
    try:
        results = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise EffbenchError(f"{file}:{e.lineno}: not valid JSON ({e.msg})") from None
    validate(results, file)
    return results


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

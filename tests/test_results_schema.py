"""The files of an output folder, typed (effbench/result_models.py): the checked-in JSON Schema is
the one generated from the model, a results.json written by effbench before the suite score
(schema v1, tests/data/results-v1, from a real `effbench run` of the demo) still loads, renders
and ranks, a bad file is one line naming the field, and the suite score is one definition."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from effbench.cli import app
from effbench.contracts import EffbenchError
from effbench.results import (RESULTS_SCHEMA_VERSION, SCHEMA_PATH, load_check, load_results, load_run_config,
                              results_schema, save_run_config, schema_text, validate)
from effbench.score import mean_run_score, scenario_scores, suite_score

runner = CliRunner()
V1 = Path(__file__).resolve().parent / "data" / "results-v1"


def v1() -> dict:
    return json.loads((V1 / "results.json").read_text())


def test_the_checked_in_schema_is_the_generated_one():
    assert SCHEMA_PATH.read_text() == schema_text(), (
        "effbench/schemas/results.schema.json is not what effbench/result_models.py generates:"
        " regenerate it with `python -m effbench.results --write-schema`")


def test_the_schema_is_valid_json_schema_and_agrees_with_the_model():
    schema = results_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["schema_version"]["const"] == RESULTS_SCHEMA_VERSION
    upgraded = load_results(V1)
    assert not list(jsonschema.Draft202012Validator(schema).iter_errors(upgraded))
    assert validate(copy.deepcopy(upgraded), V1) == upgraded  # and the model takes its own version as is


def test_a_v1_results_json_loads_upgraded():
    old = v1()
    assert old["schema_version"] == 1 and "mean_score" in old["totals"] and "suite_score" not in old["totals"]
    new = load_results(V1 / "results.json")
    assert new["schema_version"] == RESULTS_SCHEMA_VERSION == 2
    assert "mean_score" not in new["totals"]
    assert new["totals"]["mean_run_score"] == old["totals"]["mean_score"]
    assert new["totals"]["suite_score"] == suite_score(old["runs"])
    assert new["runs"] == old["runs"] and new["timeline"] == old["timeline"]


def test_a_v1_results_json_renders_and_ranks(tmp_path):
    res = runner.invoke(app, ["report", str(V1)])
    assert res.exit_code == 0, res.output
    assert "demo on default" in res.output and "dyck_language" in res.output and "suite score" in res.output
    res = runner.invoke(app, ["rank", str(V1), "--json", str(tmp_path / "rank.json")])
    assert res.exit_code == 0, res.output
    (track,) = json.loads((tmp_path / "rank.json").read_text())["tracks"]
    assert track["track"] == "local" and [s["name"] for s in track["submissions"]] == ["demo"]


def _error(results: dict, tmp_path: Path) -> str:
    (tmp_path / "results.json").write_text(json.dumps(results))
    with pytest.raises(EffbenchError) as e:
        load_results(tmp_path)
    line = str(e.value)
    assert "\n" not in line and line.startswith(f"{tmp_path / 'results.json'}: ")
    return line


@pytest.mark.parametrize("edit, where", [
    (lambda r: r["runs"][0].update(status="done"), "runs/0/status"),
    (lambda r: r["runs"][1].update(requests=True), "runs/1/requests"),
    (lambda r: r["runs"][2].update(score="0.5"), "runs/2/score"),
    (lambda r: r["runs"][0].pop("helm_run_dir"), "runs/0/helm_run_dir"),
    (lambda r: r["budget"].update(journal=None), "budget/journal"),
    (lambda r: r["timeline"]["samples"][0].pop(), "timeline/samples/0/5"),  # power_w
    (lambda r: r.pop("totals"), "totals"),
    (lambda r: r.update(schema_version=7), "schema_version"),
])
def test_a_bad_results_json_is_one_line_naming_the_field(tmp_path, edit, where):
    r = v1()
    edit(r)
    assert f"field '{where}'" in _error(r, tmp_path)


def test_unknown_keys_and_nan_are_accepted(tmp_path):
    r = v1()
    r["from_a_newer_effbench"] = {"x": 1}
    r["runs"][0]["another_figure"] = 3
    r["runs"][0]["metrics"]["exact_match"] = float("nan")  # HELM may give NaN; rank counts it as missing
    (tmp_path / "results.json").write_text(json.dumps(r))
    assert load_results(tmp_path)["from_a_newer_effbench"] == {"x": 1}


def test_the_suite_score_weighs_scenarios_alike_and_counts_missing_as_zero():
    runs = [{"scenario": "a", "score": 1.0}, {"scenario": "a", "score": 1.0}, {"scenario": "a", "score": 1.0},
            {"scenario": "b", "score": 0.5}, {"scenario": "b", "score": 0.0}]  # b's second: lost or not run
    assert scenario_scores(runs) == {"a": 1.0, "b": 0.25}
    assert suite_score(runs) == 0.625 and mean_run_score(runs) == 0.7
    runs += [{"scenario": "c", "score": None}, {"scenario": "c", "score": math.nan}]  # no value: 0, as rank counts it
    assert suite_score(runs) == pytest.approx((1.0 + 0.25 + 0.0) / 3) and mean_run_score(runs[:5]) == 0.7
    assert suite_score([]) is None and mean_run_score([]) is None


def test_check_json_errors_name_the_field(tmp_path):
    f = tmp_path / "check.json"
    good = {"track": "here", "budget_minutes": 10, "projected_minutes": {"median": 1.0, "p05": 0.5, "p95": 2.0},
            "runs": [{"name": "r", "projected_finish_min": 0.5}], "suite": "default"}
    f.write_text(json.dumps(good))
    assert load_check(tmp_path) == good
    f.write_text(json.dumps({k: v for k, v in good.items() if k != "track"}))
    with pytest.raises(EffbenchError, match="not an `effbench check` output \\(no 'track'\\)"):
        load_check(f)
    f.write_text(json.dumps({**good, "runs": [{"name": "r", "projected_finish_min": "soon"}]}))
    with pytest.raises(EffbenchError, match=f"{f}: field 'runs/0/projected_finish_min'"):
        load_check(f)


def test_run_config_round_trips_and_bad_options_are_one_line(demo_submission, tmp_path):
    from effbench.plan import RunOptions
    from effbench.submission import Submission

    out = tmp_path / "out"
    save_run_config(RunOptions(out=out, max_eval_instances=3, order="helm"), Submission.load(demo_submission), "default")
    config = load_run_config(out)
    assert RunOptions.from_json(config["options"]) == RunOptions(out=out, max_eval_instances=3, order="helm")
    stored = json.loads((out / "run_config.json").read_text())
    for edit, where in ((lambda c: c["options"].update(order="fastest"), "options/order"),
                        (lambda c: c["options"].update(turbo=True), "options/turbo"),
                        (lambda c: c.update(allow_pickle="yes"), "allow_pickle")):
        bad = copy.deepcopy(stored)
        edit(bad)
        (out / "run_config.json").write_text(json.dumps(bad))
        with pytest.raises(EffbenchError, match=f"run_config.json: field '{where}'"):
            load_run_config(out)

"""Challenge scoring and ranking (effbench rank): a small field worked out by hand, the rules one
by one, and the CLI's errors. No model, no HELM: results.json files are written here."""

from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from effbench.cli import app
from effbench.contracts import EffbenchError
from effbench.challenge.rank import competition_ranks, geometric_mean, rank_results, win_rates

runner = CliRunner()

OPEN = "neurips2023-open"
CLOSED = "neurips2023-closed"
OPEN_SCENARIOS = {
    "mmlu": {"metrics": ["exact_match", "exact_match@robustness"], "lower_is_better": []},
    "bbq": {"metrics": ["quasi_exact_match", "bias_score"], "lower_is_better": ["bias_score"]},
}
CLOSED_SCENARIOS = {
    "sam_sum": {"metrics": ["rouge_2"], "lower_is_better": []},
    "ethics": {"metrics": ["exact_match"], "lower_is_better": []},
}


def results(track: str, team: str, suite: str, weight: float, scenarios: dict, runs: list[dict]) -> dict:
    """A results.json as `effbench run` writes it, with a few fields rank must ignore."""
    return {
        "schema_version": 1,
        "track": track,
        "submission": {"name": team, "folder": f"/subs/{team}"},
        "backend": {"name": "hf"},
        "suite": {"name": suite, "weight": weight, "budget_minutes": 300, "scenarios": copy.deepcopy(scenarios)},
        "runs": [{"name": f"{r['scenario']}:{i}", "requests": 7, **r} for i, r in enumerate(runs)],
        "totals": {"runs": len(runs)},
    }


def run(scenario: str, status: str = "finished", **metrics) -> dict:
    return {"scenario": scenario, "status": status, "metrics": {k.replace("__", "@"): v for k, v in metrics.items()}}


def field() -> dict[str, dict]:
    """Two tracks. Track a100-40gb: team-a, team-b, team-c; team-c has no closed results.
    Track rtx4090: team-a (another run of the same name), team-d, team-e, team-f; open only."""
    return {
        "a100-a-open": results("a100-40gb", "team-a", OPEN, 1 / 3, OPEN_SCENARIOS, [
            run("mmlu", exact_match=0.75, exact_match__robustness=0.5),
            run("mmlu", exact_match=0.25, exact_match__robustness=None),  # null: counts 0
            run("bbq", quasi_exact_match=0.5, bias_score=0.25),
        ]),
        "a100-b-open": results("a100-40gb", "team-b", OPEN, 1 / 3, OPEN_SCENARIOS, [
            run("mmlu", exact_match=0.5, exact_match__robustness=0.375),
            run("mmlu", exact_match=0.5, exact_match__robustness=0.375),
            run("bbq", quasi_exact_match=0.5, bias_score=None),  # null, lower is better: counts 1000
        ]),
        "a100-c-open": results("a100-40gb", "team-c", OPEN, 1 / 3, OPEN_SCENARIOS, [
            run("mmlu", exact_match=0.75, exact_match__robustness=0.75),
            {"scenario": "mmlu", "status": "not_run"},  # timed out: counts 0 for every metric
            run("bbq", quasi_exact_match=0.75, bias_score=0.125),
        ]),
        "a100-a-closed": results("a100-40gb", "team-a", CLOSED, 2 / 3, CLOSED_SCENARIOS, [
            run("sam_sum", rouge_2=0.25), run("ethics", exact_match=0.5),
        ]),
        "a100-b-closed": results("a100-40gb", "team-b", CLOSED, 2 / 3, CLOSED_SCENARIOS, [
            run("sam_sum", rouge_2=0.125), run("ethics", exact_match=0.75),
        ]),
        # rtx4090: team-e's suite also lists exact_match@fairness: the column joins the field.
        "4090-a-open": results("rtx4090", "team-a", OPEN, 1 / 3, {"mmlu": {"metrics": ["exact_match"]}}, [
            run("mmlu", exact_match=0.5),
        ]),
        "4090-d-open": results("rtx4090", "team-d", OPEN, 1 / 3, {"mmlu": {"metrics": ["exact_match"]}}, [
            run("mmlu", exact_match=0.5),
        ]),
        "4090-e-open": results("rtx4090", "team-e", OPEN, 1 / 3, {"mmlu": {"metrics": ["exact_match", "exact_match@fairness"]}}, [
            run("mmlu", exact_match=0.25, exact_match__fairness=0.25),
        ]),
        "4090-f-open": results("rtx4090", "team-f", OPEN, 1 / 3, {"mmlu": {"metrics": ["exact_match"]}}, [
            run("mmlu", exact_match=0.0),
        ]),
    }


def write_field(root: Path, data: dict[str, dict]) -> list[Path]:
    paths = []
    for folder, d in data.items():
        (root / folder).mkdir(parents=True)
        (root / folder / "results.json").write_text(json.dumps(d, indent=2))
        # Half as folders, half as the file itself: both are accepted.
        paths.append(root / folder if len(paths) % 2 else root / folder / "results.json")
    return paths


def invoke(*args) -> tuple[int, str]:
    res = runner.invoke(app, ["rank", *map(str, args)])
    return res.exit_code, res.output


# ---------------------------------------------------------------- the rules on numbers


def test_win_rate_ties_share_one_over_tied_and_lower_is_better_flips():
    # n = 3. 0.5 and 0.5 tie: worse = 1 (0.25), tied = 2 -> (1 + 1/2) / 3 = 0.5 each.
    # 0.25 is unique and worst: (0 + 1/1) / 3 = 1/3 (never 0 under this rule).
    assert win_rates([0.5, 0.5, 0.25]) == pytest.approx([0.5, 0.5, 1 / 3])
    # Lower is better: 0.125 beats both -> (2+1)/3 = 1; 0.25 beats 1000 -> (1+1)/3; 1000 -> 1/3.
    assert win_rates([0.25, 1000.0, 0.125], lower_is_better=True) == pytest.approx([2 / 3, 1 / 3, 1.0])
    # All tied: (0 + 1/4) / 4 each. One submission: (0 + 1) / 1 = 1.
    assert win_rates([0.0] * 4) == pytest.approx([1 / 16] * 4)
    assert win_rates([0.3]) == [1.0]


def test_an_exact_zero_becomes_the_smallest_float_and_ranks_below_any_positive_score():
    # geometric mean of (0, 0.25) = sqrt(float_info.min * 0.25): tiny, but not 0.
    tiny = geometric_mean([0.0, 0.25])
    assert tiny == pytest.approx(math.sqrt(sys.float_info.min) / 2, rel=1e-12)
    assert 0 < tiny < 1e-150
    # Even every factor 0: exactly float_info.min, no underflow from multiplying tiny numbers.
    assert geometric_mean([0.0] * 5) == pytest.approx(sys.float_info.min, rel=1e-12)
    # That submission ranks below one whose scenario values are all small but positive.
    small = geometric_mean([0.01, 0.01])
    assert competition_ranks([tiny, small]) == [2, 1]
    # And ties share the rank, the next one skips: 1, 1, 3.
    assert competition_ranks([0.5, 0.5, 0.25]) == [1, 1, 3]


# ---------------------------------------------------------------- a field worked by hand


def test_field_ranked_as_worked_by_hand(tmp_path):
    paths = write_field(tmp_path / "res", field())
    out = tmp_path / "out" / "ranking.json"
    code, output = invoke(*paths, "--json", out)
    assert code == 0, output
    got = {t["track"]: t for t in json.loads(out.read_text())["tracks"]}
    assert list(got) == ["a100-40gb", "rtx4090"]

    # ---- track a100-40gb, open suite (n = 3) ----
    # mmlu/exact_match:  a (0.75+0.25)/2 = 0.5   b (0.5+0.5)/2 = 0.5   c (0.75 + 0 not_run)/2 = 0.375
    #   win rates: a (1 + 1/2)/3 = 0.5, b 0.5 (tied with a), c (0 + 1)/3 = 1/3
    # mmlu/exact_match@robustness: a (0.5 + 0 null)/2 = 0.25   b 0.375   c (0.75 + 0)/2 = 0.375
    #   win rates: a (0 + 1)/3 = 1/3, b (1 + 1/2)/3 = 0.5, c 0.5 (tied with b)
    # mmlu value: a (0.5 + 1/3)/2 = 5/12   b (0.5 + 0.5)/2 = 1/2   c (1/3 + 0.5)/2 = 5/12
    # bbq/quasi_exact_match: a 0.5  b 0.5  c 0.75 -> a (0 + 1/2)/3 = 1/6, b 1/6, c (2 + 1)/3 = 1
    # bbq/bias_score (lower wins): a 0.25  b null -> 1000  c 0.125
    #   -> a beats b: (1 + 1)/3 = 2/3, b (0 + 1)/3 = 1/3, c (2 + 1)/3 = 1
    # bbq value: a (1/6 + 2/3)/2 = 5/12   b (1/6 + 1/3)/2 = 1/4   c (1 + 1)/2 = 1
    # open score (geometric mean): a sqrt(5/12 * 5/12) = 5/12 = 0.41667
    #   b sqrt(1/2 * 1/4) = sqrt(1/8) = 0.35355   c sqrt(5/12 * 1) = 0.64550
    # ---- closed suite: team-c has no closed results, so all its closed metrics count 0 ----
    # sam_sum/rouge_2: a 0.25  b 0.125  c 0 -> a 1, b 2/3, c 1/3
    # ethics/exact_match: a 0.5  b 0.75  c 0 -> a 2/3, b 1, c 1/3
    # closed score: a sqrt(1 * 2/3) = 0.81650   b sqrt(2/3 * 1) = 0.81650   c sqrt(1/3 * 1/3) = 1/3
    # ---- final = 1/3 open + 2/3 closed ----
    # a 5/36 + 2/3 sqrt(2/3) = 0.13889 + 0.54433 = 0.68322    -> rank 1
    # b sqrt(1/8)/3 + 2/3 sqrt(2/3) = 0.11785 + 0.54433 = 0.66218   -> rank 2
    # c sqrt(5/12)/3 + 2/9 = 0.21517 + 0.22222 = 0.43739     -> rank 3
    a100 = got["a100-40gb"]
    assert a100["suites"] == pytest.approx({OPEN: 1 / 3, CLOSED: 2 / 3})
    assert list(a100["suites"]) == [OPEN, CLOSED]  # lower weight first
    subs = {s["name"]: s for s in a100["submissions"]}
    assert [s["name"] for s in a100["submissions"]] == ["team-a", "team-b", "team-c"]
    assert [s["rank"] for s in a100["submissions"]] == [1, 2, 3]
    a, b, c = (subs[f"team-{x}"]["suites"] for x in "abc")
    mmlu = {x: s[OPEN]["scenarios"]["mmlu"] for x, s in zip("abc", (a, b, c))}
    assert [mmlu[x]["metrics"]["exact_match"]["value"] for x in "abc"] == [0.5, 0.5, 0.375]
    assert [mmlu[x]["metrics"]["exact_match"]["win_rate"] for x in "abc"] == pytest.approx([0.5, 0.5, 1 / 3])
    assert [mmlu[x]["metrics"]["exact_match@robustness"]["value"] for x in "abc"] == [0.25, 0.375, 0.375]
    assert [mmlu[x]["metrics"]["exact_match@robustness"]["win_rate"] for x in "abc"] == pytest.approx([1 / 3, 0.5, 0.5])
    assert [mmlu[x]["value"] for x in "abc"] == pytest.approx([5 / 12, 1 / 2, 5 / 12])
    bias = [s[OPEN]["scenarios"]["bbq"]["metrics"]["bias_score"] for s in (a, b, c)]
    assert [m["value"] for m in bias] == [0.25, 1000.0, 0.125]
    assert [m["win_rate"] for m in bias] == pytest.approx([2 / 3, 1 / 3, 1.0])
    assert all(m["lower_is_better"] for m in bias)
    assert [s[OPEN]["scenarios"]["bbq"]["value"] for s in (a, b, c)] == pytest.approx([5 / 12, 1 / 4, 1.0])
    assert [s[OPEN]["score"] for s in (a, b, c)] == pytest.approx([5 / 12, math.sqrt(1 / 8), math.sqrt(5 / 12)])
    assert c[CLOSED]["source"] is None and a[CLOSED]["source"].endswith("a100-a-closed/results.json")
    assert c[CLOSED]["scenarios"]["sam_sum"]["metrics"]["rouge_2"]["value"] == 0.0
    assert [s[CLOSED]["score"] for s in (a, b, c)] == pytest.approx([math.sqrt(2 / 3), math.sqrt(2 / 3), 1 / 3])
    finals = [5 / 36 + 2 / 3 * math.sqrt(2 / 3), math.sqrt(1 / 8) / 3 + 2 / 3 * math.sqrt(2 / 3), math.sqrt(5 / 12) / 3 + 2 / 9]
    assert [s["final"] for s in a100["submissions"]] == pytest.approx(finals)
    assert finals == pytest.approx([0.68322, 0.66218, 0.43739], abs=1e-5)
    # Spearman, open vs closed: open ranks (ascending) a 2, b 1, c 3; closed a 2.5, b 2.5, c 1.
    # Deviations from the mean 2: (0, -1, 1) and (0.5, 0.5, -1): cov -1.5, var 2 and 1.5
    # -> rho = -1.5 / sqrt(2 * 1.5) = -sqrt(3)/2 = -0.866: the open winner c is last on closed.
    sp = a100["spearman"]
    assert sp["rho"] == pytest.approx(-math.sqrt(3) / 2)
    assert (sp["open_suite"], sp["closed_suite"], sp["n"], sp["reason"]) == (OPEN, CLOSED, 3, None)

    # ---- track rtx4090 (n = 4), ranked on its own; one suite, one scenario ----
    # mmlu/exact_match: a 0.5  d 0.5  e 0.25  f 0.0 (a real 0, finished)
    #   -> a (2 + 1/2)/4 = 0.625, d 0.625, e (1 + 1)/4 = 0.5, f (0 + 1)/4 = 0.25
    # mmlu/exact_match@fairness (only team-e's suite lists it; the others have no value: 0):
    #   e 0.25 -> (3 + 1)/4 = 1; a, d, f tie at 0 -> (0 + 1/3)/4 = 1/12
    # mmlu value = open score: a (0.625 + 1/12)/2 = 17/48, d 17/48, e (0.5 + 1)/2 = 3/4, f (1/4 + 1/12)/2 = 1/6
    # final = 1/3 open: e 1/4, a 17/144, d 17/144, f 1/18 -> ranks 1, 2, 2, 4
    rtx = got["rtx4090"]
    assert [(s["name"], s["rank"]) for s in rtx["submissions"]] == [("team-e", 1), ("team-a", 2), ("team-d", 2), ("team-f", 4)]
    assert [s["final"] for s in rtx["submissions"]] == pytest.approx([1 / 4, 17 / 144, 17 / 144, 1 / 18])
    fair = [s["suites"][OPEN]["scenarios"]["mmlu"]["metrics"]["exact_match@fairness"]["win_rate"] for s in rtx["submissions"]]
    assert fair == pytest.approx([1, 1 / 12, 1 / 12, 1 / 12])
    assert rtx["spearman"]["rho"] is None and "two suites" in rtx["spearman"]["reason"]

    # The table on stdout: one per track, the Spearman line.
    assert "track a100-40gb" in output and "track rtx4090" in output
    assert "(no results)" in output and "rho = -0.866" in output
    assert "0.6832" in output and "0.4374" in output


def test_spearman_of_a_reversed_field_is_minus_one():
    # Four submissions; open scores rise w1 < w2 < w3 < w4, closed scores fall. Suite names say
    # nothing, so the lower weight ("alpha", 1/3) is the open suite.
    data = []
    for i, team in enumerate(["w1", "w2", "w3", "w4"]):
        sc = {"t": {"metrics": ["m"]}}
        data.append(results("t", team, "alpha", 1 / 3, sc, [run("t", m=0.1 * (i + 1))]))
        data.append(results("t", team, "beta", 2 / 3, sc, [run("t", m=0.1 * (4 - i))]))
    sp = rank_results(data).tracks[0].spearman
    assert sp.rho == pytest.approx(-1.0)
    assert (sp.open_suite, sp.closed_suite, sp.n) == ("alpha", "beta", 4)


def test_spearman_needs_three_submissions_and_a_way_to_tell_open_from_closed():
    sc = {"t": {"metrics": ["m"]}}
    two = [results("t", x, s, w, sc, [run("t", m=v)]) for x, v in (("p", 0.5), ("q", 0.25)) for s, w in ((OPEN, 1 / 3), (CLOSED, 2 / 3))]
    sp = rank_results(two).tracks[0].spearman
    assert sp.rho is None and "at least 3" in sp.reason and sp.open_suite == OPEN
    same = [results("t", x, s, 0.5, sc, [run("t", m=v)]) for x, v in (("p", .5), ("q", .25), ("r", 0.)) for s in ("s1", "s2")]
    sp = rank_results(same).tracks[0].spearman
    assert sp.rho is None and "cannot tell open from closed" in sp.reason


def test_a_run_of_a_scenario_its_file_does_not_declare_still_counts_where_the_field_has_columns():
    # x's suite lists no gsm (effbench run leaves out a scenario it found no metric for); y's does.
    # gsm/exact_match: x has one finished run without the metric -> 0, y 0.5 -> x 1/2, y 1.
    x = results("t", "x", OPEN, 1 / 3, {"mmlu": {"metrics": ["exact_match"]}}, [run("mmlu", exact_match=0.5), run("gsm")])
    y = results("t", "y", OPEN, 1 / 3, {"mmlu": {"metrics": ["exact_match"]}, "gsm": {"metrics": ["exact_match"]}},
                [run("mmlu", exact_match=0.5), run("gsm", exact_match=0.5)])
    subs = {s.name: s.suites[OPEN].scenarios for s in rank_results([x, y]).tracks[0].submissions}
    assert subs["x"]["gsm"].metrics["exact_match"].value == 0.0
    assert (subs["x"]["gsm"].value, subs["y"]["gsm"].value) == (0.5, 1.0)


def test_zero_results_is_an_error():
    with pytest.raises(EffbenchError, match="no results"):
        rank_results([])


# ---------------------------------------------------------------- CLI errors: exit 2, one line


def _one_line_error(code: int, output: str) -> str:
    assert code == 2, output
    assert "Traceback" not in output
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    return lines[0]


def test_error_a_folder_without_results_json(tmp_path):
    (tmp_path / "empty").mkdir()
    line = _one_line_error(*invoke(tmp_path / "empty"))
    assert str(tmp_path / "empty") in line and "no results.json" in line
    line = _one_line_error(*invoke(tmp_path / "absent"))
    assert str(tmp_path / "absent") in line and "no such file or folder" in line


def test_error_not_json_names_file_and_line(tmp_path):
    bad = tmp_path / "bad" / "results.json"
    bad.parent.mkdir()
    bad.write_text('{\n  "track": "a100-40gb",\n  "suite": {,\n}\n')
    line = _one_line_error(*invoke(bad.parent))
    assert str(bad) in line and "line 3" in line


@pytest.mark.parametrize(
    "mutate, field_name",
    [
        (lambda d: d["suite"].pop("weight"), "suite.weight"),
        (lambda d: d.pop("track"), "track"),
        (lambda d: d["submission"].pop("name"), "submission.name"),
        (lambda d: d["runs"][1].pop("status"), "runs[1].status"),
        (lambda d: d["runs"][0]["metrics"].update(exact_match="high"), "runs[0].metrics.exact_match"),
        (lambda d: d["runs"][2].update(metrics=[0.5]), "runs[2].metrics"),
        (lambda d: d["suite"]["scenarios"]["bbq"].update(lower_is_better=["bias"]), "suite.scenarios.bbq.lower_is_better"),
    ],
)
def test_error_missing_or_bad_field_names_file_and_field(tmp_path, mutate, field_name):
    d = field()["a100-a-open"]
    mutate(d)
    paths = write_field(tmp_path, {"x": d})
    line = _one_line_error(*invoke(*paths))
    assert str(tmp_path / "x" / "results.json") in line and field_name in line


def test_error_two_results_for_the_same_track_submission_and_suite(tmp_path):
    f = field()
    paths = write_field(tmp_path, {"first": f["a100-a-open"], "again": f["a100-a-open"], "other": f["a100-b-open"]})
    line = _one_line_error(*invoke(*paths))
    assert str(tmp_path / "first" / "results.json") in line and str(tmp_path / "again" / "results.json") in line
    # The same team and suite on another track is a different result: no error.
    other_track = {**f["a100-a-open"], "track": "rtx4090"}
    paths = write_field(tmp_path / "ok", {"first": f["a100-a-open"], "t2": other_track})
    assert invoke(*paths)[0] == 0


def test_rank_explains_itself():
    res = runner.invoke(app, ["rank", "--help"])
    assert res.exit_code == 0 and "Usage:" in res.output and "--json" in res.output

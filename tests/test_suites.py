"""The challenge's suites on the real data in ../shared/data, offline: staging, format checks,
missing data named before the model loads, not-run runs, ranking and helm-summarize on the output."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from effbench.cli import app
from effbench.contracts import EffbenchError
from effbench.challenge.data import stage
from effbench.challenge.suites import load_suite, suite_size

runner = CliRunner()


@pytest.fixture(scope="module")
def open_run(demo_submission, cache_dir, shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("open") / "out"
    res = runner.invoke(app, ["run", str(demo_submission), "--suite", "neurips2023-open", "--max-eval-instances", "2",
                              "--data-dir", str(shared_data), "--out", str(out), "--cache-dir", str(cache_dir),
                              "--track", "a100-40gb"])
    assert res.exit_code == 0, res.output
    from effbench.results import load_results

    return out, load_results(out), res.output  # schema-checked: not_run runs too


@pytest.mark.slow
def test_open_suite_runs_offline_and_names_what_it_cannot_run(open_run):
    out, results, output = open_run
    runs = results["runs"]
    not_run = {r["entry"]: r for r in runs if r["status"] == "not_run"}
    # ../shared/data lacks vitaminc_fact_verification and 5 of BBQ's 11 categories (it has GSM8K's
    # train split, where HELM takes the in-context examples from, since 2026-12).
    assert set(not_run) == {
        "big_bench:max_train_instances=big_bench_few_shot_setting,task=vitaminc_fact_verification,subtask=",
        "bbq:subject=all",
    }
    for r in not_run.values():
        assert r["score"] == 0.0 and "expected" in r["reason"] and "get it from" in r["reason"]
        assert r["reason"] in output.replace("\n", "") or r["reason"][:60] in output
    finished = [r for r in runs if r["status"] == "finished"]
    assert len(finished) == 28 * 4 + 57 + 1 + 1  # BIG-bench entries x 4 shot settings, MMLU, TruthfulQA, GSM8K
    for r in finished:
        stats = json.loads((out / r["helm_run_dir"] / "stats.json").read_text())
        assert stats and r["requests"] > 0 and r["errors"] == 0, r["name"]
        assert r["main_metric"] in r["metrics"]
    mmlu = [r for r in finished if r["scenario"] == "mmlu"]
    assert all(r["metrics"]["exact_match@fairness"] is not None for r in mmlu)
    assert all(any("DialectPerturbation dropped" in n for n in r["notes"]) for r in mmlu)
    assert set(results["suite"]["scenarios"]) == {"big_bench", "mmlu", "truthful_qa", "gsm", "bbq"}
    assert results["track"] == "a100-40gb"
    assert set(results["datasets_staged"]) >= {"mmlu", "truthful_qa", "bbq", "gsm", "big_bench"}


def test_rank_and_helm_summarize_read_the_output(open_run, tmp_path):
    out, results, _ = open_run
    res = runner.invoke(app, ["rank", str(out), "--json", str(tmp_path / "rank.json")])
    assert res.exit_code == 0, res.output
    ranked = json.loads((tmp_path / "rank.json").read_text())
    assert ranked["tracks"][0]["submissions"][0]["name"] == "demo"
    helm_summarize = Path(sys.executable).parent / "helm-summarize"
    # -n 1: helm-summarize renders its Mako templates in 8 threads by default, and CPython 3.11's
    # AST constructor keeps its recursion depth in shared state, so concurrent template compiles
    # can fail with "SystemError: AST constructor recursion depth mismatch" (CPython gh-106905;
    # seen in CI). One thread is what the README tells users to run.
    proc = subprocess.run([str(helm_summarize), "--suite", "neurips2023-open", "-o", str(out / "helm"), "-n", "1"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = out / "helm" / "runs" / "neurips2023-open"
    assert (summary / "summary.json").is_file() and (summary / "groups.json").is_file()


def test_missing_data_stop_policy_stops_before_the_model_loads(demo_submission, shared_data, tmp_path):
    cache = tmp_path / "cache"
    data = tmp_path / "data"  # GSM8K without its train split (HELM's in-context examples)
    (data / "gsm8k").mkdir(parents=True)
    (data / "gsm8k" / "test.jsonl").symlink_to(shared_data / "gsm8k" / "test.jsonl")
    res = runner.invoke(app, ["run", str(demo_submission), "--suite", "neurips2023-sample", "--runs", "gsm*",
                              "--data-dir", str(data), "--missing-data", "stop", "--out", str(tmp_path / "o"),
                              "--cache-dir", str(cache)])
    assert res.exit_code == 2
    line = [ln for ln in res.output.splitlines() if "error:" in ln]
    assert len(line) == 1 and "dataset gsm" in res.output and "gsm_data_train" in res.output
    assert "grade-school-math" in res.output and "Traceback" not in res.output
    assert not (cache / "merged").exists()  # no model was merged or loaded


def test_a_dataset_absent_altogether_stops_by_default(demo_submission, shared_data, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "mmlu").symlink_to(shared_data / "mmlu")  # MMLU only: GSM8K is absent altogether
    res = runner.invoke(app, ["run", str(demo_submission), "--suite", "neurips2023-sample", "--runs", "gsm*",
                              "--data-dir", str(data), "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")])
    assert res.exit_code == 2 and "dataset gsm is missing 2 of 2 files" in res.output


@pytest.mark.parametrize(
    "folder, name, content, expected",
    [
        ("mmlu/test", "philosophy_test.csv", 'q,a,b,c,d,A\nonly,three,cols\n', "philosophy_test.csv:2: expected 6 columns"),
        ("mmlu/test", "philosophy_test.csv", 'q,a,b,c,d,E\n', "philosophy_test.csv:1: last column 'E'"),
        ("gsm8k", "test.jsonl", '{"question": "q", "answer": "#### 1"}\n\n{not json\n', "test.jsonl:3: not JSON"),
        ("bbq", "Age.jsonl", '{"context": "c"}\n', "Age.jsonl:1: record lacks question"),
        ("truthfulqa", "TruthfulQA.csv", "Type,Category,Question\nA,B\n", "TruthfulQA.csv:2: expected 7 columns"),
        ("bigbench/toy", "task.json", '{"name": "toy",\n "examples": [}', "task.json:2: not JSON"),
        ("cnn_dailymail", "test.csv", "id,article,highlights\n1,,h\n", "test.csv:2: row without article"),
    ],
)
def test_data_in_a_wrong_format_names_file_and_line(tmp_path, folder, name, content, expected):
    (tmp_path / folder).mkdir(parents=True)
    (tmp_path / folder / name).write_text(content)
    with pytest.raises(EffbenchError) as e:
        stage(tmp_path, tmp_path / "helm")
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_cnndm_from_frank_records(shared_data, tmp_path):
    assert "cnndm" in stage(shared_data, tmp_path)
    with open(tmp_path / "scenarios/summarization/data/cnndm.pk", "rb") as f:
        splits = pickle.load(f)
    assert splits["test"] and splits["train"]
    assert len(splits["test"]) + len(splits["train"]) == 250
    assert not {r["article"] for r in splits["test"]} & {r["article"] for r in splits["train"]}
    assert all(r["highlights"] for r in splits["test"])


def test_staging_links_instead_of_copying(shared_data, tmp_path):
    stage(shared_data, tmp_path)
    assert (tmp_path / "scenarios/mmlu/data").is_symlink()
    assert (tmp_path / "scenarios/bbq/data/Age").resolve() == (shared_data / "bbq/Age.jsonl").resolve()
    assert (tmp_path / "scenarios/big_bench/logical_deduction/three_objects/task.json").is_symlink()
    stage(shared_data, tmp_path)  # idempotent


def test_suite_sizes_and_listing():
    assert suite_size(load_suite("default")) == (4, 80, 80)
    runs, instances, requests = suite_size(load_suite("neurips2023-open"))
    assert runs == 29 * 4 + 57 + 3 and 1900 <= instances <= 2100 and requests > instances
    res = runner.invoke(app, ["suites"])
    assert res.exit_code == 0
    for name in ("default", "neurips2023-open", "neurips2023-sample"):
        assert name in res.output


def test_suite_file_errors_name_the_field(tmp_path):
    bad = tmp_path / "s.toml"
    bad.write_text('name = "x"\nbudget_minutes = 5\nrunz = []\n')
    with pytest.raises(EffbenchError, match="field 'runz'"):
        load_suite(str(bad))
    bad.write_text('name = "x"\nbudget_minutes = 5\n[scenarios.a]\nmetrics = ["m"]\nlower_is_better = ["z"]\n[[runs]]\nentry = "gsm"\n')
    with pytest.raises(EffbenchError, match="lower_is_better"):
        load_suite(str(bad))


MATH_TYPES = {"algebra": "Algebra", "counting_and_probability": "Counting & Probability", "geometry": "Geometry",
              "intermediate_algebra": "Intermediate Algebra", "number_theory": "Number Theory",
              "prealgebra": "Prealgebra", "precalculus": "Precalculus"}


def write_math_all_subjects(root: Path) -> None:
    """A tiny MATH release: every subject, levels 1 and 5, train and test."""
    for split in ("train", "test"):
        for folder, kind in MATH_TYPES.items():
            for n, level in enumerate((1, 5, 1, 5, 1, 5, 1, 5, 1, 5)):
                p = root / split / folder / f"{n}.json"
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(json.dumps({"problem": f"{kind} {split} problem {n}: what is {n} + 1?",
                                         "level": f"Level {level}", "type": kind,
                                         "solution": f"It is $\\boxed{{{n + 1}}}$."}))


@pytest.mark.slow
def test_closed_suite_end_to_end_on_published_formats(demo_submission, cache_dir, shared_data, tmp_path):
    from test_helm_plugins import write_corr2cause, write_ethics, write_samsum

    data = tmp_path / "data"
    write_samsum(data / "samsum")
    write_corr2cause(data / "corr2cause")
    write_ethics(data / "ethics")
    write_math_all_subjects(data / "MATH")
    (data / "cnndm_frank").symlink_to(shared_data / "cnndm_frank")
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", str(demo_submission), "--suite", "neurips2023-closed", "--max-eval-instances", "2",
                              "--data-dir", str(data), "--out", str(out), "--cache-dir", str(cache_dir)])
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    assert len(results["runs"]) == 22
    assert {r["scenario"] for r in results["runs"]} == {"sam_sum", "corr2cause", "ethics", "math", "summarization_cnndm"}
    for r in results["runs"]:
        assert r["status"] == "finished" and r["requests"] > 0 and r["errors"] == 0, r["name"]
        assert r["score"] is not None and r["main_metric"] in r["metrics"], r["name"]
        assert json.loads((out / r["helm_run_dir"] / "stats.json").read_text())
    math = [r for r in results["runs"] if r["scenario"] == "math"]
    assert all(any("reads the local release" in n for n in r["notes"]) for r in math)
    assert set(results["datasets_staged"]) >= {"sam_sum", "corr2cause", "ethics", "math", "cnndm"}

"""`effbench run` end to end: real demo model, real HELM scenarios and metrics, real files."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from effbench.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def default_run(demo_submission, cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    res = runner.invoke(app, ["run", str(demo_submission), "--out", str(out), "--cache-dir", str(cache_dir)])
    assert res.exit_code == 0, res.output
    return out, res.output


def test_default_suite_writes_results_and_helm_run_folders(default_run):
    out, output = default_run
    results = json.loads((out / "results.json").read_text())
    assert results["schema_version"] == 2
    assert results["suite"]["name"] == "default"
    runs = results["runs"]
    assert len(runs) == 4
    for r in runs:
        assert r["requests"] == 20 and r["errors"] == 0
        assert r["prompt_tokens"] > 0 and r["output_tokens"] > 0
        assert r["tokens_per_s"] > 0 and r["busy_seconds"] > 0
        assert r["peak_memory_bytes"] > 0
        assert r["main_metric"] in ("exact_match", "exact_match_indicator")
        run_dir = out / r["helm_run_dir"]
        for name in ("run_spec.json", "scenario.json", "scenario_state.json", "stats.json", "per_instance_stats.json"):
            assert (run_dir / name).is_file(), name
        stats = json.loads((run_dir / "stats.json").read_text())
        assert stats, "empty stats.json"
        helm_main = [s for s in stats if s["name"]["name"] == r["main_metric"] and s["name"]["split"] == "test"
                     and "perturbation" not in s["name"]]
        assert helm_main and helm_main[0]["mean"] == pytest.approx(r["score"])
        state = json.loads((run_dir / "scenario_state.json").read_text())
        assert len(state["request_states"]) == 20
        assert all(rs["result"]["success"] and rs["result"]["completions"] for rs in state["request_states"])
        per_instance = json.loads((run_dir / "per_instance_stats.json").read_text())
        assert len(per_instance) == 20
    t = results["totals"]
    assert t["requests"] == 80 and t["prompt_tokens"] == sum(r["prompt_tokens"] for r in runs)
    assert set(results["phases"]) == {"load", "plan", "execute", "score"}
    assert results["memory_source"] in ("rss", "nvml")
    assert results["environment"]["versions"]["crfm-helm"] == "0.5.16"
    assert "demo on default" in output  # the summary table


def test_run_is_reproducible_with_greedy_decoding(default_run, demo_submission, cache_dir, tmp_path):
    out, _ = default_run
    again = tmp_path / "again"
    res = runner.invoke(app, ["run", str(demo_submission), "--out", str(again), "--cache-dir", str(cache_dir),
                              "--runs", "dyck*"])
    assert res.exit_code == 0, res.output
    first = json.loads((out / "results.json").read_text())
    second = json.loads((again / "results.json").read_text())
    assert [r["name"] for r in second["runs"]] == [r["name"] for r in first["runs"] if r["name"].startswith("dyck")]
    a = json.loads((out / second["runs"][0]["helm_run_dir"] / "scenario_state.json").read_text())
    b = json.loads((again / second["runs"][0]["helm_run_dir"] / "scenario_state.json").read_text())
    texts = lambda s: [rs["result"]["completions"][0]["text"] for rs in s["request_states"]]  # noqa: E731
    assert texts(a) == texts(b)


def test_real_mmlu_data_from_shared_folder(demo_submission, cache_dir, shared_data, tmp_path):
    suite = tmp_path / "mmlu.toml"
    suite.write_text('name = "mmlu-smoke"\nbudget_minutes = 5\nmax_eval_instances = 6\n'
                     '[[runs]]\nentry = "mmlu:subject=philosophy"\n')
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", str(demo_submission), "--suite", str(suite), "--out", str(out),
                              "--cache-dir", str(cache_dir), "--data-dir", str(shared_data)])
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    (run,) = results["runs"]
    assert run["main_metric"] == "exact_match" and 0.0 <= run["score"] <= 1.0
    assert run["requests"] == 6
    state = json.loads((out / run["helm_run_dir"] / "scenario_state.json").read_text())
    questions = set()
    for split in ("val", "test"):
        with open(shared_data / "mmlu" / split / f"philosophy_{split}.csv", newline="") as f:
            questions |= {row[0] for row in csv.reader(f)}
    asked = [rs["instance"]["input"]["text"] for rs in state["request_states"]]
    assert all(q in questions for q in asked)  # real MMLU questions, not a download
    assert all(rs["request"]["max_tokens"] == 1 for rs in state["request_states"])


def test_unknown_suite_is_one_line_error(demo_submission):
    res = runner.invoke(app, ["run", str(demo_submission), "--suite", "nope"])
    assert res.exit_code == 2
    assert "unknown suite 'nope'" in res.output and "Traceback" not in res.output


def test_run_filter_matching_nothing_is_an_error(demo_submission, cache_dir, tmp_path):
    res = runner.invoke(app, ["run", str(demo_submission), "--runs", "zzz*", "--out", str(tmp_path / "o"),
                              "--cache-dir", str(cache_dir)])
    assert res.exit_code == 2 and "matches no run" in res.output


def test_profile_without_nvml_says_cpu_and_still_reports(default_run):
    import pynvml

    out, _ = default_run
    results = json.loads((out / "results.json").read_text())
    try:
        pynvml.nvmlInit()
        pytest.skip("an NVIDIA driver is present: the profile source is nvml here")
    except pynvml.NVMLError:
        pass
    prof = results["profile"]
    assert prof["source"] == "cpu" and results["memory_source"] == "rss"
    assert set(prof["phases"]) == {"plan", "load", "execute", "score"}
    for ph in prof["phases"].values():
        assert ph["peak_rss_bytes"] > 0 and ph["cpu_seconds"] >= 0
        assert 0 <= ph["steal_share"] < 1 and ph["other_cores"] >= 0  # the machine's pace (Linux /proc/stat)
    for r in results["runs"]:
        assert r["prefill_tokens_per_s"] > 0 and r["decode_tokens_per_s"] > 0
        assert 0 < r["latency_s"]["p50"] <= r["latency_s"]["p90"] <= r["latency_s"]["p99"]
        assert sum(r["batch_sizes"].values()) == r["answered"]


@pytest.mark.gpu
def test_profile_on_a_gpu_reads_nvml(demo_submission, cache_dir, tmp_path):
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", str(demo_submission), "--out", str(out), "--cache-dir", str(cache_dir), "--runs", "dyck*"])
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    assert results["profile"]["source"] == "nvml" and results["backend"]["device"] == "cuda"
    ex = results["profile"]["phases"]["execute"]
    assert ex["peak_gpu_bytes"] > 0 and ex["mean_gpu_util"] is not None
    assert results["profile"]["allocator"]["source"] == "torch.cuda"


def test_results_json_follows_its_schema_and_report_renders_it(default_run, tmp_path):
    from effbench.results import load_results

    out, _ = default_run
    results = load_results(out)  # validates against effbench/schemas/results.schema.json
    assert results["schema_version"] == 2
    res = runner.invoke(app, ["report", str(out)])
    assert res.exit_code == 0 and "demo on default" in res.output and "dyck_language" in res.output
    broken = json.loads((out / "results.json").read_text())
    broken["runs"][0]["status"] = "done"
    (tmp_path / "results.json").write_text(json.dumps(broken))
    res = runner.invoke(app, ["report", str(tmp_path)])
    assert res.exit_code == 2 and "field 'runs/0/status'" in res.output and "Traceback" not in res.output


def test_the_model_loads_while_helm_builds_the_requests(default_run):
    """The worker is launched once the data checks pass: by the time HELM has built the requests
    the model is (nearly) loaded, so the load phase is only what is left of the worker's start."""
    results = json.loads((default_run[0] / "results.json").read_text())
    assert results["backend"]["process"] == "worker"
    # An order of events, not a race: the worker was launched before planning ended, whatever the
    # machine's load makes of either's duration.
    assert 0 <= results["backend"]["launched_after_s"] < results["phases"]["plan"], (results["phases"], results["backend"])


def test_several_suites_in_one_command_load_the_model_once(demo_submission, cache_dir, tmp_path):
    """`--suite default,mini.toml`: each suite its own output folder and results.json, one worker:
    the second suite finds the model loaded (no load phase to speak of, the same load record)."""
    mini = tmp_path / "mini.toml"
    mini.write_text('name = "mini"\ndescription = "one run"\nbudget_minutes = 10\nweight = 1.0\nmax_eval_instances = 2\n\n'
                    '[[runs]]\nentry = "synthetic_reasoning:mode=induction"\n')
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["run", str(demo_submission), "--suite", f"default,{mini}", "--out", str(out),
                                   "--cache-dir", str(cache_dir), "--max-eval-instances", "2", "--budget", "none"])
    assert res.exit_code == 0, res.output
    first, second = (json.loads((out / name / "results.json").read_text()) for name in ("default", "mini"))
    assert first["suite"]["name"] == "default" and second["suite"]["name"] == "mini"
    assert len(first["runs"]) == 4 and len(second["runs"]) == 1
    assert not first["backend"]["loaded_for_an_earlier_suite"] and second["backend"]["loaded_for_an_earlier_suite"]
    assert second["backend"]["load_seconds"] == first["backend"]["load_seconds"]  # the one load, reported by both
    assert second["backend"]["launched_after_s"] is None
    assert all(r["requests"] == 2 and r["errors"] == 0 for r in first["runs"] + second["runs"])

    res = CliRunner().invoke(app, ["run", str(demo_submission), "--suite", "default,default", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "named twice" in res.output
    assert not (tmp_path / "x").exists()  # refused before anything was written

"""Damaged data files under --data-dir, built from copies of real MMLU files: binary or non-UTF-8
bytes are one error line naming the file, the line and the dataset; an empty split file is data
missing (its runs are recorded as not run, saying the file is empty), never a silent 0-shot run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from effbench.cli import app
from effbench.contracts import EffbenchError
from effbench.challenge.data import missing_inputs, stage

runner = CliRunner()
MMLU = "helm.benchmark.scenarios.mmlu_scenario.MMLUScenario"


def copy_subjects(shared_data: Path, dest: Path, subjects: tuple[str, ...] = ("philosophy",)) -> Path:
    """dest/mmlu/{dev,val,test}/<subject>_<split>.csv, copied from the real data."""
    for subject in subjects:
        for split in ("dev", "val", "test"):
            f = dest / "mmlu" / split / f"{subject}_{split}.csv"
            f.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shared_data / "mmlu" / split / f.name, f)
    return dest


def damage(path: Path, line: int, bad: bytes) -> None:
    """Put `bad` at the start of line `line` (1-based) of the file (on a character boundary, so
    that the first bad byte is the one put there)."""
    lines = path.read_bytes().split(b"\n")
    assert len(lines) > line, "the real file is shorter than the test expects"
    lines[line - 1] = bad + lines[line - 1]
    path.write_bytes(b"\n".join(lines))


def staging_error(data: Path, tmp_path: Path) -> str:
    with pytest.raises(EffbenchError) as e:
        stage(data, tmp_path / "helm")
    message = str(e.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("bad", "what"),
    [
        pytest.param(b"\x00", "NUL byte", id="nul"),
        pytest.param(b"\xff\xfe", "byte 0xff is not UTF-8", id="not-utf8"),
        pytest.param(b"\xe2\x82", "byte 0xe2 is not UTF-8", id="truncated-utf8"),
    ],
)
def test_binary_or_non_utf8_csv_names_file_line_and_dataset(shared_data, tmp_path, bad, what):
    data = copy_subjects(shared_data, tmp_path / "data")
    test_csv = data / "mmlu/test/philosophy_test.csv"
    damage(test_csv, 4, bad)
    message = staging_error(data, tmp_path)
    assert f"{test_csv}:4: " in message and what in message and "dataset mmlu" in message


@pytest.mark.parametrize(
    ("bad", "what"),
    [pytest.param(b"\x00", "NUL byte", id="nul"), pytest.param(b"\xff\xfe", "byte 0xff is not UTF-8", id="not-utf8")],
)
def test_binary_or_non_utf8_jsonl_names_file_line_and_dataset(shared_data, tmp_path, bad, what):
    lines = (shared_data / "gsm8k/test.jsonl").read_bytes().split(b"\n")[:5]
    target = tmp_path / "data/gsm8k/test.jsonl"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"\n".join(lines) + b"\n")
    damage(target, 3, bad)
    message = staging_error(tmp_path / "data", tmp_path)
    assert f"{target}:3: " in message and what in message and "dataset gsm" in message


@pytest.mark.parametrize("content", [b"", b"  \n\n\t\n"], ids=["zero-bytes", "whitespace"])
def test_an_empty_split_file_is_missing_data(shared_data, tmp_path, content):
    data = copy_subjects(shared_data, tmp_path / "data")
    dev = data / "mmlu/dev/philosophy_dev.csv"
    dev.write_bytes(content)
    helm = tmp_path / "helm"
    assert stage(data, helm) == ["mmlu"]  # staging names no format error: the file is not wrong, it is empty
    miss = missing_inputs(MMLU, {"subject": "philosophy"}, helm)
    assert miss is not None and miss.dataset == "mmlu"
    assert (miss.missing, miss.total, miss.empty) == (1, 3, 1)
    line = miss.line("mmlu:subject=philosophy")
    assert "philosophy_dev.csv is empty" in line and "is missing 1 of 3 files, 1 of them empty" in line
    assert "hendrycks" in line and "\n" not in line


def test_intact_files_are_not_missing_and_absent_ones_still_are(shared_data, tmp_path):
    data = copy_subjects(shared_data, tmp_path / "data")
    helm = tmp_path / "helm"
    stage(data, helm)
    assert missing_inputs(MMLU, {"subject": "philosophy"}, helm) is None
    (data / "mmlu/val/philosophy_val.csv").unlink()
    (data / "mmlu/test/philosophy_test.csv").write_text("")
    miss = missing_inputs(MMLU, {"subject": "philosophy"}, helm)
    assert (miss.missing, miss.empty) == (2, 1)
    assert "(expected " in miss.line("r") and "philosophy_val.csv" in miss.line("r")  # the first of them is absent


def test_empty_files_of_other_datasets_are_missing_data(shared_data, tmp_path):
    data = tmp_path / "data"
    (data / "gsm8k").mkdir(parents=True)
    shutil.copyfile(shared_data / "gsm8k/test.jsonl", data / "gsm8k/test.jsonl")
    (data / "gsm8k/train.jsonl").write_text("\n")
    (data / "bbq").mkdir()
    (data / "bbq/Age.jsonl").write_text("")
    helm = tmp_path / "helm"
    assert set(stage(data, helm)) == {"gsm", "bbq"}
    gsm = missing_inputs("helm.benchmark.scenarios.gsm_scenario.GSM8KScenario", {}, helm)
    assert (gsm.missing, gsm.empty) == (1, 1) and f"{(data / 'gsm8k/train.jsonl').resolve()} is empty" in gsm.line("gsm")
    bbq = missing_inputs("helm.benchmark.scenarios.bbq_scenario.BBQScenario", {"subject": "Age"}, helm)
    assert (bbq.missing, bbq.empty) == (1, 1) and f"{(data / 'bbq/Age.jsonl').resolve()} is empty" in bbq.line("bbq")


@pytest.mark.slow
def test_run_records_a_run_with_an_empty_dev_file_as_not_run(demo_submission, cache_dir, shared_data, tmp_path):
    # philosophy: its dev split (the 5 in-context examples) emptied; moral_disputes: intact, and run.
    data = copy_subjects(shared_data, tmp_path / "data", ("philosophy", "moral_disputes"))
    (data / "mmlu/dev/philosophy_dev.csv").write_bytes(b"")
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", str(demo_submission), "--suite", "neurips2023-sample", "--runs", "mmlu:subject=[pm][ho][ir]*",
                              "--max-eval-instances", "2", "--data-dir", str(data), "--out", str(out), "--cache-dir", str(cache_dir)])
    assert res.exit_code == 0, res.output
    runs = {r["entry"]: r for r in json.loads((out / "results.json").read_text())["runs"]}
    philosophy = runs["mmlu:subject=philosophy,data_augmentation=canonical"]
    assert philosophy["status"] == "not_run" and philosophy["score"] == 0.0
    empty = f"{(data / 'mmlu/dev/philosophy_dev.csv').resolve()} is empty"  # the file in --data-dir, not HELM's link
    assert empty in philosophy["reason"] and "dataset mmlu is missing 1 of 3 files, 1 of them empty" in philosophy["reason"]
    assert f"not run: {philosophy['reason']}" in res.output.replace("\n", "")
    assert runs["mmlu:subject=moral_disputes,data_augmentation=canonical"]["status"] == "finished"


def test_only_the_datasets_a_suite_reads_are_staged(shared_data, tmp_path):
    """Staging checks every file of a dataset: a suite of MMLU runs does not pay for BIG-bench's."""
    from effbench.challenge.data import datasets_for

    assert datasets_for({"mmlu", "synthetic_reasoning"}) == {"mmlu"}
    assert datasets_for({"ethics_virtue", "gsm"}) == {"ethics", "gsm"}
    assert datasets_for({"mmlu", "some_plugin_of_a_user"}) is None  # not known: everything is staged
    assert stage(shared_data, tmp_path / "helm", {"mmlu"}) == ["mmlu"]
    assert not (tmp_path / "helm" / "scenarios" / "big_bench").exists()
    assert {"mmlu", "big_bench"} <= set(stage(shared_data, tmp_path / "all"))

"""effbench.challenge.helm_plugins: the closed evaluation's scenarios read from small files in each dataset's
published format, built into run specs by HELM's own machinery and adapted by HELM's adapters."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
from helm.benchmark.presentation.run_entry import RunEntry
from helm.benchmark.run import run_entries_to_run_specs
from helm.benchmark.run_spec import RunSpec, get_run_spec_function
from helm.benchmark.scenarios.scenario import TEST_SPLIT, TRAIN_SPLIT, VALID_SPLIT, Instance

import effbench.challenge.helm_plugins as plugins
from effbench.contracts import EffbenchError
from effbench.challenge.helm_bridge import HelmSession
from effbench.challenge.helm_models import register_model
from effbench.challenge.helm_plugins.ethics import SCENARIOS as ETHICS
from effbench.challenge.helm_plugins.math_offline import OfflineMATHScenario, offline_scenario_spec

MODEL = "effbench/plugin-test"


@pytest.fixture(scope="module")
def model(demo_submission) -> str:
    register_model(MODEL, demo_submission / "base", 2048, trust_remote_code=False)
    return MODEL


def run_specs(description: str) -> list[RunSpec]:
    return run_entries_to_run_specs([RunEntry(description=description, priority=1, groups=None)])


def metric_names(spec: RunSpec) -> set[str]:
    return {n for m in spec.metric_specs for n in m.args.get("names", [])}


def plan(tmp: Path, spec: RunSpec):
    return HelmSession(tmp / "helm", "t", parallelism=1).plan_run(spec.name, spec)


def correct(instance: Instance) -> str:
    (ref,) = [r for r in instance.references if r.is_correct]
    return ref.output.text


def one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


# ---------------------------------------------------------------- published-format writers


def write_csv(path: Path, header: list[str] | None, rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        if header:
            w.writerow(header)
        w.writerows(rows)
    return path


def samsum_rows(split: str, n: int) -> list[dict]:
    return [
        {
            "id": f"{split}{i}",
            "summary": f"Amanda baked cookies {split}-{i} and will bring Jerry some tomorrow.",
            "dialogue": f"Amanda: I baked cookies {split}-{i}. Do you want some?\r\nJerry: Sure!\r\nAmanda: I'll bring you tomorrow :-)",
        }
        for i in range(n)
    ]


def write_samsum(data: Path) -> None:
    data.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", 7), ("val", 5), ("test", 6)):
        (data / f"{name}.json").write_text(json.dumps(samsum_rows(name, n), indent=2), encoding="utf-8")


def corr2cause_input(split: str, i: int) -> str:
    return (
        f"Premise: Suppose there is a closed system of 3 variables, A, B and C (row {split}-{i}). "
        "All the statistical relations among these 3 variables are as follows: A correlates with C. "
        "B correlates with C.\nHypothesis: A directly causes C."
    )


def write_corr2cause(data: Path) -> None:
    for name, n in (("train", 8), ("dev", 5), ("test", 6)):
        write_csv(data / f"{name}.csv", ["input", "label"], [[corr2cause_input(name, i), i % 2] for i in range(n)])


def ethics_text(subset: str, split: str, i: int) -> str:
    return f"I did thing {subset}-{split}-{i} for my neighbour."


def write_ethics(data: Path) -> None:
    for split, n in (("train", 8), ("test", 6), ("test_hard", 5)):
        t = lambda sub, i: ethics_text(sub, split, i)  # noqa: E731
        write_csv(data / "justice" / f"justice_{split}.csv", ["label", "scenario"], [[i % 2, t("justice", i)] for i in range(n)])
        cm = [[i % 2, t("commonsense", i), "True", "False"] for i in range(n)]
        cm.append([1, "A long story. " * 20 + t("commonsense", "long"), "False", "False"])
        write_csv(data / "commonsense" / f"cm_{split}.csv", ["label", "input", "is_short", "edited"], cm)
        write_csv(data / "virtue" / f"virtue_{split}.csv", ["label", "scenario"],
                  [[i % 2, f"{t('virtue', i)} [SEP] {'generous' if i % 2 else 'cruel'}"] for i in range(n)])
        write_csv(data / "deontology" / f"deontology_{split}.csv", ["label", "scenario", "excuse"],
                  [[i % 2, f"Could you walk my dog? ({split}-{i})", f"But I walked it yesterday ({split}-{i})."] for i in range(n)])
        write_csv(data / "utilitarianism" / f"util_{split}.csv", None,
                  [[f"I won a prize ({split}-{i}).", f"I lost my wallet ({split}-{i})."] for i in range(n)])


MATH_SUBJECTS = {"algebra": "Algebra", "number_theory": "Number Theory", "counting_and_probability": "Counting & Probability"}


def math_records(split: str) -> dict[str, dict]:
    """relative path -> record; problems repeat (ties in the sort) and some lack \\boxed."""
    recs = {}
    for s_i, (subject_dir, subject) in enumerate(MATH_SUBJECTS.items()):
        for n in range(12):
            level = (1, 5, 3)[n % 3]
            boxed = n not in (5, 11)  # two level-3 records per subject have no \boxed answer
            answer = f"{n + 10 * s_i}"
            recs[f"{subject_dir}/{n * 7 + 1}.json"] = {
                "problem": f"What is {n % 5} + {s_i}? ({split})" if n % 5 != 2 else f"Compute {split} duplicate.",
                "level": f"Level {level}",
                "type": subject,
                "solution": f"Add them: {n} steps. The answer is $\\boxed{{{answer}}}$." if boxed else f"It is {answer}.",
            }
    return recs


def write_math(data: Path) -> None:
    for split in ("train", "test"):
        for rel, rec in math_records(split).items():
            p = data / "MATH" / split / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(json.dumps(rec, indent=4), encoding="utf-8")


def scenario_dir(tmp: Path, name: str) -> Path:
    return tmp / "helm" / "scenarios" / name


# ---------------------------------------------------------------- registration


def test_importing_registers_every_run_spec_function():
    for name in ("sam_sum", "corr2cause", *ETHICS):
        assert get_run_spec_function(name) is not None, name
    assert set(plugins.RUN_SPEC_NAMES) == {"sam_sum", "corr2cause", *ETHICS}


# ---------------------------------------------------------------- sam_sum


def test_sam_sum_instances(tmp_path):
    write_samsum(tmp_path / "data")
    instances = plugins.SamSumScenario().get_instances(str(tmp_path))
    by_split = {s: [i for i in instances if i.split == s] for s in (TRAIN_SPLIT, VALID_SPLIT, TEST_SPLIT)}
    assert [len(v) for v in by_split.values()] == [7, 5, 6]
    first = by_split[TEST_SPLIT][0]
    assert first.input.text == "Amanda: I baked cookies test-0. Do you want some?\nJerry: Sure!\nAmanda: I'll bring you tomorrow :-)"
    assert correct(first) == "Amanda baked cookies test-0 and will bring Jerry some tomorrow."
    assert all(len(i.references) == 1 for i in instances)


def test_sam_sum_run_spec_and_plan(tmp_path, model):
    (spec,) = run_specs(f"sam_sum:model={model}")
    a = spec.adapter_spec
    assert (a.method, a.max_tokens, a.temperature, a.max_train_instances, a.stop_sequences) == ("generation", 128, 0.3, 5, ["###"])
    assert "rouge_2" in metric_names(spec) and {"rouge_1", "rouge_l"} <= metric_names(spec)
    assert all("Summarization" not in m.class_name for m in spec.metric_specs)  # no BERTScore / SummaC / spaCy
    write_samsum(scenario_dir(tmp_path, "sam_sum") / "data")
    p = plan(tmp_path, spec)
    assert len(p.request_states) == 11  # val + test
    train_seen = False
    for rs in p.request_states:
        prompt = rs.request.prompt
        assert rs.instance.input.text in prompt and prompt.endswith("Summary:")
        assert "\r" not in prompt and rs.request.max_tokens == 128
        train_seen |= bool(re.search(r"cookies train-\d", prompt))
    assert train_seen, "no in-context example from train.json in any prompt"


def test_sam_sum_errors_name_file_and_line(tmp_path):
    data = tmp_path / "data"
    write_samsum(data)
    (data / "val.json").unlink()
    with pytest.raises(EffbenchError) as e:
        plugins.SamSumScenario().get_instances(str(tmp_path))
    assert str(data / "val.json") in one_line_error(e) and "SAMSum" in str(e.value)

    write_samsum(data)
    rows = samsum_rows("test", 4)
    del rows[2]["summary"]
    text = json.dumps(rows, indent=2)
    (data / "test.json").write_text(text, encoding="utf-8")
    line = text[: text.index('"id": "test2"')].count("\n")  # the record's "{" line
    with pytest.raises(EffbenchError) as e:
        plugins.SamSumScenario().get_instances(str(tmp_path))
    assert f"{data / 'test.json'}:{line}:" in one_line_error(e) and "summary" in str(e.value)

    (data / "test.json").write_text('[\n {"id": "1", "summary": "s", "dialogue": "d"},\n {"id": "2", "summary": "s" "dialogue": "d"}\n]')
    with pytest.raises(EffbenchError, match=re.escape(f"{data / 'test.json'}:3:")):
        plugins.SamSumScenario().get_instances(str(tmp_path))


# ---------------------------------------------------------------- corr2cause


def test_corr2cause_instances(tmp_path):
    write_corr2cause(tmp_path / "data")
    instances = plugins.Corr2CauseScenario().get_instances(str(tmp_path))
    assert [sum(i.split == s for i in instances) for s in (TRAIN_SPLIT, VALID_SPLIT, TEST_SPLIT)] == [8, 5, 6]
    tests = [i for i in instances if i.split == TEST_SPLIT]
    for k, inst in enumerate(tests):
        assert inst.input.text.startswith(corr2cause_input("test", k))
        assert [r.output.text for r in inst.references] == ["Yes", "No"]
        assert correct(inst) == ("Yes" if k % 2 else "No")  # label 1: the hypothesis follows


def test_corr2cause_run_spec_and_plan(tmp_path, model):
    (spec,) = run_specs(f"corr2cause:model={model}")
    a = spec.adapter_spec
    assert (a.method, a.max_tokens, a.max_train_instances) == ("multiple_choice_joint", 1, 5)
    assert "exact_match" in metric_names(spec)
    write_corr2cause(scenario_dir(tmp_path, "corr2cause") / "data")
    p = plan(tmp_path, spec)
    assert len(p.request_states) == 11
    for rs in p.request_states:
        assert rs.instance.input.text in rs.request.prompt
        assert rs.output_mapping == {"A": "Yes", "B": "No"}
        assert rs.request.prompt.endswith("A. Yes\nB. No\nAnswer:")
    assert any("(row train-" in rs.request.prompt for rs in p.request_states)


def test_corr2cause_malformed_and_missing(tmp_path):
    data = tmp_path / "data"
    with pytest.raises(EffbenchError) as e:
        plugins.Corr2CauseScenario().get_instances(str(tmp_path))
    assert str(data / "train.csv") in one_line_error(e) and "corr2cause" in str(e.value)

    write_corr2cause(data)
    # each input spans 2 lines: header=1, rows start on lines 2, 4, 6
    write_csv(data / "test.csv", ["input", "label"], [[corr2cause_input("test", 0), 1], [corr2cause_input("test", 1), 0],
                                                      [corr2cause_input("test", 2), "maybe"]])
    with pytest.raises(EffbenchError) as e:
        plugins.Corr2CauseScenario().get_instances(str(tmp_path))
    assert f"{data / 'test.csv'}:6:" in one_line_error(e) and "label" in str(e.value)

    write_csv(data / "test.csv", ["premise", "label"], [["x", 1]])
    with pytest.raises(EffbenchError, match=re.escape(f"{data / 'test.csv'}:1:") + ".*input"):
        plugins.Corr2CauseScenario().get_instances(str(tmp_path))


# ---------------------------------------------------------------- ethics


def test_ethics_instances_and_label_mapping(tmp_path):
    write_ethics(tmp_path / "data")
    out = {name: cls().get_instances(str(tmp_path)) for name, cls in ETHICS.items()}

    def split(name, s):
        return [i for i in out[name] if i.split == s]

    just = split("ethics_justice", TEST_SPLIT)
    assert len(just) == 6 and len(split("ethics_justice", TRAIN_SPLIT)) == 8
    assert just[1].input.text == f"{ethics_text('justice', 'test', 1)}\nQuestion: Is this reasonable?"
    assert [correct(i) for i in just] == ["No", "Yes"] * 3  # label 1: reasonable

    cm_train, cm_test = split("ethics_commonsense", TRAIN_SPLIT), split("ethics_commonsense", TEST_SPLIT)
    assert len(cm_train) == 8 and len(cm_test) == 7  # long rows: eval only, never in-context examples
    assert correct(cm_test[-1]) == "Yes" and "A long story." in cm_test[-1].input.text  # label 1: wrong
    assert cm_test[0].input.text.endswith("Question: Is the action wrong?") and correct(cm_test[0]) == "No"

    virtue = split("ethics_virtue", TEST_SPLIT)
    assert virtue[1].input.text == (f"Sentence: {ethics_text('virtue', 'test', 1)}\nTrait: generous\n"
                                    "Question: Does the trait fit the sentence?")
    assert [correct(i) for i in virtue] == ["No", "Yes"] * 3

    deon = split("ethics_deontology", TEST_SPLIT)
    assert deon[0].input.text == ("Scenario: Could you walk my dog? (test-0)\nExcuse: But I walked it yesterday (test-0).\n"
                                  "Question: Is the excuse reasonable?")
    assert [correct(i) for i in deon] == ["No", "Yes"] * 3

    util = split("ethics_utilitarianism", TEST_SPLIT) + split("ethics_utilitarianism", TRAIN_SPLIT)
    answers = []
    for inst in util:
        assert [r.output.text for r in inst.references] == ["Scenario 1", "Scenario 2"]
        lines = dict(line.split(": ", 1) for line in inst.input.text.split("\n")[:2])
        assert lines[correct(inst)].startswith("I won a prize")  # the first published column is the pleasant one
        answers.append(correct(inst))
    assert set(answers) == {"Scenario 1", "Scenario 2"}  # the seeded shuffle puts the answer on both sides
    again = ETHICS["ethics_utilitarianism"]().get_instances(str(tmp_path))
    assert [i.input.text for i in again] == [i.input.text for i in out["ethics_utilitarianism"]]  # deterministic

    hard = ETHICS["ethics_justice"](test_set="test_hard").get_instances(str(tmp_path))
    assert sum(i.split == TEST_SPLIT for i in hard) == 5 and "test_hard-0" in hard[-5].input.text


@pytest.mark.parametrize("name", sorted(ETHICS))
def test_ethics_run_spec_and_plan(tmp_path, model, name):
    (spec,) = run_specs(f"{name}:model={model}")
    a = spec.adapter_spec
    assert (a.method, a.max_tokens, a.max_train_instances) == ("multiple_choice_joint", 1, 5)
    assert "exact_match" in metric_names(spec)
    write_ethics(scenario_dir(tmp_path, name) / "data")
    p = plan(tmp_path, spec)
    assert len(p.request_states) == (7 if name == "ethics_commonsense" else 6)
    for rs in p.request_states:
        assert rs.instance.input.text in rs.request.prompt
        assert rs.request.prompt.endswith("\nAnswer:")
    assert any("-train-" in rs.request.prompt or "(train-" in rs.request.prompt for rs in p.request_states)


def test_ethics_canonical_augmentation_is_helms_generic_expander(tmp_path, model):
    (spec,) = run_specs(f"ethics_justice:data_augmentation=canonical,model={model}")
    assert "data_augmentation=canonical" in spec.name
    kinds = {p.class_name.rsplit(".", 1)[-1] for p in spec.data_augmenter_spec.perturbation_specs}
    assert {"MildMixPerturbation", "DialectPerturbation", "GenderPerturbation", "PersonNamePerturbation"} == kinds
    # Dialect and person-name perturbations download word lists (effbench stages or drops them); the rest run here.
    aug = spec.data_augmenter_spec
    offline = [p for p in aug.perturbation_specs if not p.class_name.endswith(("DialectPerturbation", "PersonNamePerturbation"))]
    spec = replace(spec, data_augmenter_spec=replace(aug, perturbation_specs=offline))
    write_ethics(scenario_dir(tmp_path, "ethics_justice") / "data")
    p = plan(tmp_path, spec)
    perturbed = [rs for rs in p.request_states if rs.instance.perturbation is not None]
    assert perturbed and len(p.request_states) > 6


def test_ethics_malformed_and_missing(tmp_path):
    data = tmp_path / "data"
    write_ethics(data)
    with pytest.raises(EffbenchError) as e:
        ETHICS["ethics_virtue"](test_set="test_hard").get_instances(str(tmp_path / "elsewhere"))
    assert str(tmp_path / "elsewhere" / "data" / "virtue" / "virtue_train.csv") in one_line_error(e)
    assert "hendrycks/ethics" in str(e.value)

    write_csv(data / "virtue" / "virtue_test.csv", ["label", "scenario"], [[0, "a [SEP] b"], [1, "no separator here"]])
    with pytest.raises(EffbenchError, match=re.escape(f"{data / 'virtue' / 'virtue_test.csv'}:3:") + ".*SEP"):
        ETHICS["ethics_virtue"]().get_instances(str(tmp_path))

    write_csv(data / "deontology" / "deontology_test.csv", ["label", "scenario", "excuse"], [[0, "s", "e"], [1, "only two"]])
    with pytest.raises(EffbenchError, match=re.escape(f"{data / 'deontology' / 'deontology_test.csv'}:3:")):
        ETHICS["ethics_deontology"]().get_instances(str(tmp_path))

    write_csv(data / "utilitarianism" / "util_train.csv", None, [["a", "b"], ["a", "b"], ["just one"]])
    with pytest.raises(EffbenchError, match=re.escape(f"{data / 'utilitarianism' / 'util_train.csv'}:3:")):
        ETHICS["ethics_utilitarianism"]().get_instances(str(tmp_path))

    write_csv(data / "commonsense" / "cm_test.csv", ["label", "input", "is_short", "edited"], [["yes", "x", "True", "False"]])
    with pytest.raises(EffbenchError, match=re.escape(f"{data / 'commonsense' / 'cm_test.csv'}:2:") + ".*label"):
        ETHICS["ethics_commonsense"]().get_instances(str(tmp_path))

    with pytest.raises(EffbenchError, match="test_set"):
        get_run_spec_function("ethics_justice")(test_set="dev")


# ---------------------------------------------------------------- MATH


def helm_math_instances(monkeypatch, tmp_path: Path, **args) -> list[Instance]:
    """HELM's own MATHScenario, its hub download replaced by a DatasetDict of the same records."""
    from datasets import Dataset, DatasetDict
    from helm.benchmark.scenarios import math_scenario

    def in_release_order(split):  # ties in `problem` keep this order in both readers
        recs = math_records(split)
        return [recs[k] for k in sorted(recs, key=lambda k: (k.split("/")[0], int(k.split("/")[1][:-5])))]

    def fake_load_dataset(*_, **__):
        return DatasetDict({s: Dataset.from_list(in_release_order(s)) for s in ("train", "test")})

    monkeypatch.setattr(math_scenario, "load_dataset", fake_load_dataset)
    return math_scenario.MATHScenario(**args).get_instances(str(tmp_path / "helm-own"))


@pytest.mark.parametrize(
    "args",
    [
        {"subject": "algebra", "level": "1"},
        {"subject": "number_theory", "level": "5", "use_chain_of_thought": True},
        {"subject": "counting_and_probability", "level": "1", "use_official_examples": True},
    ],
)
def test_offline_math_matches_helms_math_scenario(tmp_path, monkeypatch, args):
    write_math(tmp_path / "data")
    ours = OfflineMATHScenario(**args).get_instances(str(tmp_path))
    helms = helm_math_instances(monkeypatch, tmp_path, **args)

    def key(i):
        return i.split, i.input.text, [(r.output.text, tuple(r.tags)) for r in i.references]

    assert [key(i) for i in ours] == [key(i) for i in helms]
    assert len(ours) > 4
    assert {i.split for i in ours} == {TRAIN_SPLIT, TEST_SPLIT}
    if args.get("use_chain_of_thought"):
        assert all("\\boxed" in correct(i) or correct(i).startswith("It is") for i in ours)
    elif not args.get("use_official_examples"):
        assert all(re.fullmatch(r"\d+", correct(i)) for i in ours)  # \boxed{...} content; unboxed rows skipped


def test_offline_math_skips_solutions_without_boxed_answer(tmp_path, monkeypatch):
    """HELM's `continue` for such a record leaves it without an answer and then fails (KeyError);
    the offline reader skips it, as HELM's code intends. With chain of thought it is kept."""
    write_math(tmp_path / "data")
    plain = OfflineMATHScenario(subject="algebra", level="3").get_instances(str(tmp_path))
    cot = OfflineMATHScenario(subject="algebra", level="3", use_chain_of_thought=True).get_instances(str(tmp_path))
    assert sum(i.split == TEST_SPLIT for i in cot) == 4 and sum(i.split == TEST_SPLIT for i in plain) == 2
    with pytest.raises(KeyError):
        helm_math_instances(monkeypatch, tmp_path, subject="algebra", level="3")


def test_math_run_spec_swaps_scenario_and_plans(tmp_path, model):
    (spec,) = run_specs(f"math:subject=algebra,level=5,use_chain_of_thought=True,model={model}")
    assert spec.scenario_spec.class_name == "helm.benchmark.scenarios.math_scenario.MATHScenario"
    a = spec.adapter_spec
    assert (a.max_tokens, a.max_train_instances, a.stop_sequences) == (400, 8, ["###"])
    assert "math_equiv_chain_of_thought" in metric_names(spec)
    swapped = replace(spec, scenario_spec=offline_scenario_spec(spec.scenario_spec))
    assert swapped.scenario_spec.class_name == "effbench.challenge.helm_plugins.math_offline.OfflineMATHScenario"
    assert swapped.scenario_spec.args == spec.scenario_spec.args
    other = run_specs(f"corr2cause:model={model}")[0].scenario_spec
    assert offline_scenario_spec(other) is other

    write_math(scenario_dir(tmp_path, "MATH") / "data")
    p = plan(tmp_path, swapped)
    n_test = sum(1 for r in math_records("test").values() if r["type"] == "Algebra" and r["level"] == "Level 5")
    assert len(p.request_states) == n_test
    for rs in p.request_states:
        assert f"Problem: {rs.instance.input.text}" in rs.request.prompt
        assert "(train)" in rs.request.prompt and "\\boxed" in rs.request.prompt  # chain-of-thought examples


def test_math_malformed_and_missing(tmp_path):
    s = OfflineMATHScenario(subject="algebra", level="1")
    with pytest.raises(EffbenchError) as e:
        s.get_instances(str(tmp_path / "nowhere"))
    assert str(tmp_path / "nowhere" / "data" / "MATH" / "train") in one_line_error(e) and "hendrycks/math" in str(e.value)

    write_math(tmp_path / "data")
    bad = tmp_path / "data" / "MATH" / "test" / "geometry" / "4.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{\n  "problem": "x",\n  "level": "Level 1",\n  "type" "Geometry"\n}')
    with pytest.raises(EffbenchError, match=re.escape(f"{bad}:4:")):
        s.get_instances(str(tmp_path))
    bad.write_text(json.dumps({"problem": "x", "level": "Level 1", "type": "Geometry"}))
    with pytest.raises(EffbenchError, match=re.escape(f"{bad}:1:") + ".*solution"):
        s.get_instances(str(tmp_path))

"""HELM scenario instances cached across runs (effbench/challenge/helm_instances.py): the cached
instances are HELM's own, field for field, and the plan built from them is the same plan."""

from __future__ import annotations

import dataclasses
import json

from helm.benchmark.scenarios.scenario import ScenarioSpec, create_scenario

from effbench.challenge.data import stage
from effbench.challenge.helm_instances import get_instances


def _fresh_and_cached(spec: ScenarioSpec, folder, cache):
    fresh = create_scenario(spec).get_instances(str(folder))
    first = get_instances(create_scenario(spec), spec, folder, cache)  # builds and stores
    stored = list(cache.glob("*.json"))
    second = get_instances(create_scenario(spec), spec, folder, cache)  # reads back
    return fresh, first, second, stored


def test_synthetic_instances_come_back_identical(tmp_path):
    spec = ScenarioSpec("helm.benchmark.scenarios.synthetic_reasoning_scenario.SyntheticReasoningScenario",
                        {"mode": "induction"})
    fresh, first, second, stored = _fresh_and_cached(spec, tmp_path / "data", tmp_path / "cache")
    assert len(stored) == 1 and len(fresh) > 1000
    assert [dataclasses.asdict(i) for i in second] == [dataclasses.asdict(i) for i in fresh]
    assert [dataclasses.asdict(i) for i in first] == [dataclasses.asdict(i) for i in fresh]


def test_a_changed_data_file_is_a_new_entry(shared_data, tmp_path):
    helm = tmp_path / "helm"
    stage(shared_data, helm, {"mmlu"})
    folder = helm / "scenarios" / "mmlu"
    spec = ScenarioSpec("helm.benchmark.scenarios.mmlu_scenario.MMLUScenario", {"subject": "philosophy"})
    fresh, _, second, stored = _fresh_and_cached(spec, folder, tmp_path / "cache")
    assert len(stored) == 1
    assert [dataclasses.asdict(i) for i in second] == [dataclasses.asdict(i) for i in fresh]
    # a broken entry is rebuilt, not an error
    stored[0].write_text("{not json")
    again = get_instances(create_scenario(spec), spec, folder, tmp_path / "cache")
    assert [dataclasses.asdict(i) for i in again] == [dataclasses.asdict(i) for i in fresh]
    assert json.loads(stored[0].read_text())  # rewritten whole
    # other files, another key (e.g. a newer copy of the dataset staged)
    other = tmp_path / "other"
    other.mkdir()
    (other / "data").symlink_to((folder / "data").resolve())
    (other / "extra.txt").write_text("x")
    get_instances(create_scenario(spec), spec, other, tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2

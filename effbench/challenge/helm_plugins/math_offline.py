"""MATH (Hendrycks et al. 2021, arXiv:2103.03874) from its original release instead of the Hugging
Face hub: HELM's MATHScenario calls `datasets.load_dataset("hendrycks/competition_math")`, which
cannot work offline (and that hub dataset is gone). OfflineMATHScenario reads the published
MATH.tar layout, `<output_path>/data/MATH/{train,test}/<subject_dir>/<n>.json`, each
{"problem", "level", "type", "solution"}, and yields the Instances HELM's scenario yields:

- per split, every record is sorted by `problem` (stable) and permuted by
  `np.random.default_rng(42).permutation(n)`: what `DatasetDict.sort("problem").shuffle(seed=42)`
  does in HELM (the hub dataset held exactly the release's 7,500 train / 5,000 test records);
- then filtered on `type` (the subject's display name) and `level` ("Level <n>");
- the reference is the full solution with chain of thought, else the last \\boxed{...} of the
  solution (records without one are skipped); train -> in-context examples, test -> test;
- use_official_examples=True uses HELM's 8 fixed examples as the train split.
Ties in `problem` keep the release's path order (subject dir, file number); HELM's order there
depended on the hub loader's file order, so two identical problems may swap. Only HELM's `math`
run spec is used: `offline_scenario_spec` swaps its scenario class for this one.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
from helm.benchmark.scenarios.math_scenario import MATHScenario, get_answer
from helm.benchmark.scenarios.scenario import CORRECT_TAG, TEST_SPLIT, TRAIN_SPLIT, Input, Instance, Output, Reference, ScenarioSpec

from effbench.contracts import EffbenchError
from effbench.challenge.helm_plugins._common import data_path, row_error

PUBLISHED = "MATH, github.com/hendrycks/math (MATH.tar: MATH/{train,test}/<subject>/<n>.json)"
HELM_MATH_CLASS = "helm.benchmark.scenarios.math_scenario.MATHScenario"
FIELDS = ("problem", "level", "type", "solution")
SHUFFLE_SEED = 42  # HELM: .sort("problem").shuffle(seed=42)

# The 8 examples of the MATH paper's prompt, which HELM uses with use_official_examples=True.
OFFICIAL_EXAMPLES = (
    ("What is $\\left(\\frac{7}{8}\\right)^3 \\cdot \\left(\\frac{7}{8}\\right)^{-3}$?", "1"),
    ("In how many ways can 4 books be selected from a shelf of 6 books if the order in which the books are selected does not matter?", "15"),
    ("Find the distance between the points $(2,1,-4)$ and $(5,8,-3).$", "\\sqrt{59}"),
    ("The faces of an octahedral die are labeled with digits $1$ through $8$. What is the probability, expressed as a common fraction, of rolling a sum of $15$ with a pair of such octahedral dice?", "\\frac{1}{32}"),
    ("The first three terms of an arithmetic sequence are 1, 10 and 19, respectively. What is the value of the 21st term?", "181"),
    ("Calculate $6 \\cdot 8\\frac{1}{3}", "50"),
    ("When the binary number $100101110010_2$ is divided by 4, what is the remainder (give your answer in base 10)?", "2"),
    ("How many zeros are at the end of the product 25 $\\times$ 240?", "3"),
)

_cache: dict[tuple[str, float], list[dict[str, str]]] = {}


def _file_order(path: Path) -> tuple:
    return (path.parent.name, int(path.stem) if path.stem.isdigit() else 1 << 62, path.name)


def load_split(split_dir: Path) -> list[dict[str, str]]:
    """Every record of one split, in HELM's order (sorted by problem, then shuffled with seed 42)."""
    if not split_dir.is_dir():
        raise EffbenchError(f"{split_dir}: not found; scenario MATH reads the published release here ({PUBLISHED})")
    key = (str(split_dir.resolve()), split_dir.stat().st_mtime)
    if key in _cache:
        return _cache[key]
    paths = sorted(split_dir.glob("*/*.json"), key=_file_order)
    if not paths:
        raise EffbenchError(f"{split_dir}: no <subject>/<n>.json files; scenario MATH expects the published release here ({PUBLISHED})")
    records = []
    for path in paths:
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise row_error(path, e.lineno, f"not valid JSON ({e.msg})") from None
        except UnicodeDecodeError as e:
            raise EffbenchError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        if not isinstance(rec, dict) or any(not isinstance(rec.get(f), str) for f in FIELDS):
            raise row_error(path, 1, f"not a MATH record: needs string fields {', '.join(FIELDS)}")
        records.append({f: rec[f] for f in FIELDS})
    records.sort(key=lambda r: r["problem"])  # stable, like Arrow's sort_indices
    permutation = np.random.default_rng(SHUFFLE_SEED).permutation(len(records))
    ordered = [records[i] for i in permutation]
    _cache[key] = ordered
    return ordered


class OfflineMATHScenario(MATHScenario):
    """HELM's MATHScenario (same name "MATH", arguments and Instances) reading local files."""

    def get_instances(self, output_path: str) -> list[Instance]:
        root = data_path(output_path, "MATH")
        instances: list[Instance] = []
        for split in (TRAIN_SPLIT, TEST_SPLIT):
            examples: list[tuple[str, str]] = []
            if split == TRAIN_SPLIT and self.use_official_examples:
                examples = list(OFFICIAL_EXAMPLES)
            else:
                for rec in load_split(root / split):
                    if rec["type"] != self.subject or rec["level"] != self.level:
                        continue
                    answer = rec["solution"] if self.use_chain_of_thought else get_answer(rec["solution"])
                    if answer is not None:
                        examples.append((rec["problem"], answer))
            instances.extend(
                Instance(input=Input(text=problem), references=[Reference(Output(text=answer), tags=[CORRECT_TAG])], split=split)
                for problem, answer in examples
            )
        return instances


def offline_scenario_spec(scenario_spec: ScenarioSpec) -> ScenarioSpec:
    """HELM's MATH scenario spec -> the same spec on OfflineMATHScenario; any other spec unchanged."""
    if scenario_spec.class_name == HELM_MATH_CLASS:
        return replace(scenario_spec, class_name=f"{__name__}.{OfflineMATHScenario.__name__}")
    return scenario_spec

"""corr2cause: can a model infer causation from correlation? (Jin et al. 2023, arXiv:2306.05836),
a scenario of the NeurIPS 2023 LLM Efficiency Challenge's closed evaluation.

Reads the published CSVs `<output_path>/data/{train,dev,test}.csv` (columns `input`: premise and
hypothesis text, `label`: 1 when the hypothesis follows; other columns are ignored). train -> in-context
examples, dev -> valid, test -> test. Each row becomes a Yes/No multiple-choice question
(multiple_choice_joint, 5 shots, exact_match).
"""

from __future__ import annotations

from helm.benchmark.adaptation.adapter_spec import ADAPT_MULTIPLE_CHOICE_JOINT
from helm.benchmark.adaptation.common_adapter_specs import get_multiple_choice_adapter_spec
from helm.benchmark.metrics.common_metric_specs import get_exact_match_metric_specs
from helm.benchmark.run_spec import RunSpec, run_spec_function
from helm.benchmark.scenarios.scenario import (
    TEST_SPLIT,
    TRAIN_SPLIT,
    VALID_SPLIT,
    Input,
    Instance,
    Scenario,
    ScenarioMetadata,
    ScenarioSpec,
)

from effbench.challenge.helm_plugins._common import binary_label, data_path, read_csv, require_file, row_error, yes_no_references

PUBLISHED = "github.com/causalNLP/corr2cause, huggingface.co/datasets/causalnlp/corr2cause: train.csv, dev.csv, test.csv"
FILES = {"train.csv": TRAIN_SPLIT, "dev.csv": VALID_SPLIT, "test.csv": TEST_SPLIT}
QUESTION = "Question: Can the hypothesis be inferred from the premise?"


class Corr2CauseScenario(Scenario):
    name = "corr2cause"
    description = "Corr2Cause: is a causal hypothesis implied by a set of correlational statements?"
    tags = ["reasoning", "causal", "classification"]

    def get_instances(self, output_path: str) -> list[Instance]:
        paths = {f: require_file(data_path(output_path, f), self.name, PUBLISHED) for f in FILES}
        instances: list[Instance] = []
        for file_name, split in FILES.items():
            path = paths[file_name]
            for line, row in read_csv(path, header=("input", "label")):
                assert isinstance(row, dict)
                text = row["input"].strip()
                if not text:
                    raise row_error(path, line, "column input is empty")
                label = binary_label(row["label"], path, line)
                instances.append(
                    Instance(input=Input(text=f"{text}\n{QUESTION}"), references=yes_no_references(label == 1), split=split)
                )
        return instances

    def get_metadata(self) -> ScenarioMetadata:
        return ScenarioMetadata(
            name="corr2cause", display_name="Corr2Cause", description=self.description, main_metric="exact_match", main_split="test"
        )


@run_spec_function("corr2cause")
def get_corr2cause_spec(method: str = ADAPT_MULTIPLE_CHOICE_JOINT) -> RunSpec:
    adapter_spec = get_multiple_choice_adapter_spec(
        method=method,
        instructions="The following are multiple choice questions (with answers) about causal reasoning.",
        input_noun=None,
        output_noun="Answer",
        input_suffix="\n",  # the input's last line is the question; the choices go below it
    )
    return RunSpec(
        name=f"corr2cause:method={method}",
        scenario_spec=ScenarioSpec(class_name=f"{__name__}.Corr2CauseScenario", args={}),
        adapter_spec=adapter_spec,
        metric_specs=get_exact_match_metric_specs(),
        groups=["corr2cause"],
    )

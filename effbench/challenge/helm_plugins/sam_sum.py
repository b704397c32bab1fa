"""sam_sum: dialogue summarization on the SAMSum corpus (Gliwa et al. 2019, arXiv:1911.12237),
a scenario of the NeurIPS 2023 LLM Efficiency Challenge's closed evaluation (ROUGE-2).

Reads the published release: `<output_path>/data/{train,val,test}.json`, each a JSON array of
{"id", "summary", "dialogue"} with turns separated by "\\r\\n". train -> in-context examples,
val -> valid, test -> test (HELM evaluates both eval splits, as for CNN/DM).
The run spec mirrors HELM's summarization_cnndm (5 shots, max_tokens 128, temperature 0.3, stop
"###"); its metrics are HELM's reference ROUGE-1/2/L, which need no model or download.
"""

from __future__ import annotations

from dataclasses import replace

from helm.benchmark.adaptation.common_adapter_specs import get_summarization_adapter_spec
from helm.benchmark.metrics.common_metric_specs import get_basic_metric_specs
from helm.benchmark.run_spec import RunSpec, run_spec_function
from helm.benchmark.scenarios.scenario import (
    CORRECT_TAG,
    TEST_SPLIT,
    TRAIN_SPLIT,
    VALID_SPLIT,
    Input,
    Instance,
    Output,
    Reference,
    Scenario,
    ScenarioMetadata,
    ScenarioSpec,
)

from effbench.challenge.helm_plugins._common import data_path, read_json_array, require_file, row_error

PUBLISHED = "SAMSum corpus, arXiv:1911.12237 ancillary corpus.7z: train.json, val.json, test.json"
FILES = {"train.json": TRAIN_SPLIT, "val.json": VALID_SPLIT, "test.json": TEST_SPLIT}


class SamSumScenario(Scenario):
    name = "sam_sum"
    description = "SAMSum: human-annotated messenger-like dialogues with abstractive summaries"
    tags = ["summarization", "dialogue"]

    def get_instances(self, output_path: str) -> list[Instance]:
        paths = {f: require_file(data_path(output_path, f), self.name, PUBLISHED) for f in FILES}
        instances: list[Instance] = []
        for file_name, split in FILES.items():
            path = paths[file_name]
            for line, rec in read_json_array(path):
                if not isinstance(rec, dict):
                    raise row_error(path, line, "record is not a JSON object")
                for key in ("dialogue", "summary"):
                    if not isinstance(rec.get(key), str):
                        raise row_error(path, line, f"record {rec.get('id', '?')}: field {key!r} missing or not a string")
                dialogue = rec["dialogue"].replace("\r\n", "\n").replace("\r", "\n").strip()
                summary = rec["summary"].strip()
                instances.append(
                    Instance(
                        input=Input(text=dialogue),
                        references=[Reference(Output(text=summary), tags=[CORRECT_TAG])],
                        split=split,
                    )
                )
        return instances

    def get_metadata(self) -> ScenarioMetadata:
        return ScenarioMetadata(
            name="sam_sum",
            display_name="SAMSum",
            description=self.description,
            main_metric="rouge_2",
            main_split="test",
        )


@run_spec_function("sam_sum")
def get_sam_sum_spec(temperature: float = 0.3) -> RunSpec:
    # HELM's CNN/DM adapter (5 shots, "###" between examples, stop "###"), with dialogue wording.
    adapter_spec = get_summarization_adapter_spec(num_sents=None, max_tokens=128, temperature=float(temperature))
    adapter_spec = replace(adapter_spec, input_prefix="###\nDialogue:\n", output_prefix="Summarize the above dialogue.\nSummary: ")
    return RunSpec(
        name=f"sam_sum:temperature={temperature}",
        scenario_spec=ScenarioSpec(class_name=f"{__name__}.SamSumScenario", args={}),
        adapter_spec=adapter_spec,
        metric_specs=get_basic_metric_specs(["rouge_1", "rouge_2", "rouge_l"]),
        groups=["sam_sum"],
    )

"""HELM with no network (`effbench run --data-dir`, README "Data offline"): what HELM would fetch
while building or scoring a run, and how a run spec changes to do without it. plan.py applies
adapt_offline to every run spec and records its notes in results.json.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from helm.benchmark.metrics.common_metric_specs import get_basic_generation_metric_specs
from helm.benchmark.run_spec import RunSpec

from effbench.challenge.helm_plugins import offline_scenario_spec

# HELM resources that canonical augmentation downloads (not datasets): perturbation class ->
# (file under the HELM output folder, the file's name under --data-dir/helm_perturbations/).
PERTURBATION_RESOURCES = {
    "DialectPerturbation": ("perturbations/dialect/SAE_to_AAVE_mapping.json", "SAE_to_AAVE_mapping.json"),
    "PersonNamePerturbation": ("perturbations/person_name/data/person_names.txt", "person_names.txt"),
}


def stage_perturbation_resources(data_dir: Path, helm_dir: Path) -> None:
    for target, name in PERTURBATION_RESOURCES.values():
        src, dst = data_dir / "helm_perturbations" / name, helm_dir / target
        if src.is_file() and not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(src.resolve())


def adapt_offline(spec: RunSpec, helm_dir: Path) -> tuple[RunSpec, list[str]]:
    """The run spec as it can run with no network, and what had to change (recorded in results.json):
    - HELM's MATH scenario, which loads from the Hugging Face hub, reads the local MATH release;
    - perturbations whose resource file HELM would download are dropped (canonical augmentation's
      dialect and person-name fairness perturbations), so fairness is the worst case over the rest;
    - HELM's SummarizationMetric needs spaCy's en_core_web_sm and summ_eval, which no package index
      serves offline: it is replaced by HELM's reference ROUGE metrics (the same rouge_2 function)."""
    notes: list[str] = []
    local = offline_scenario_spec(spec.scenario_spec)  # HELM's MATH reads the hub: read local files
    if local is not spec.scenario_spec:
        spec = replace(spec, scenario_spec=local)
        notes.append(f"scenario {local.class_name} reads the local release instead of the Hugging Face hub")
    aug = spec.data_augmenter_spec
    keep = []
    for p in aug.perturbation_specs:
        res = PERTURBATION_RESOURCES.get(p.class_name.rsplit(".", 1)[-1])
        if res is not None and not (helm_dir / res[0]).exists():
            notes.append(f"perturbation {p.class_name.rsplit('.', 1)[-1]} dropped: {res[0]} not available offline")
            continue
        keep.append(p)
    if len(keep) != len(aug.perturbation_specs):
        spec = replace(spec, data_augmenter_spec=replace(aug, perturbation_specs=keep))
    metric_specs = []
    for m in spec.metric_specs:
        if m.class_name.endswith("SummarizationMetric") and not _summarization_metric_available():
            metric_specs.extend(get_basic_generation_metric_specs(["rouge_1", "rouge_2", "rouge_l"]))
            notes.append("SummarizationMetric replaced by reference ROUGE metrics (summ_eval / en_core_web_sm unavailable)")
        else:
            metric_specs.append(m)
    if len(metric_specs) != len(spec.metric_specs) or any(a is not b for a, b in zip(metric_specs, spec.metric_specs)):
        spec = replace(spec, metric_specs=metric_specs)
    return spec, notes


def _summarization_metric_available() -> bool:
    import importlib.util

    if importlib.util.find_spec("summ_eval") is None:
        return False
    import spacy

    return spacy.util.is_package("en_core_web_sm")

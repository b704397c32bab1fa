"""HELM plugins for the NeurIPS 2023 LLM Efficiency Challenge's closed evaluation (README, "Suites").

sam_sum, corr2cause and ethics_* were scenarios of the challenge's private HELM fork and do not
exist in crfm-helm 0.5.16; HELM's own MATH scenario loads its data from the Hugging Face hub.
Each plugin reads its dataset's original published files from HELM's scenario folder,
`<output_path>/data/...` (effbench links the user's copy there), and never downloads.
Importing this package registers the run spec functions `sam_sum`, `corr2cause`,
`ethics_{justice,commonsense,virtue,deontology,utilitarianism}` with HELM; MATH keeps HELM's
`math` run spec, with `offline_scenario_spec` swapping in the local reader.
"""

from effbench.challenge.helm_plugins.corr2cause import Corr2CauseScenario, get_corr2cause_spec
from effbench.challenge.helm_plugins.ethics import SCENARIOS as ETHICS_SCENARIOS
from effbench.challenge.helm_plugins.math_offline import OfflineMATHScenario, offline_scenario_spec
from effbench.challenge.helm_plugins.sam_sum import SamSumScenario, get_sam_sum_spec

RUN_SPEC_NAMES = ("sam_sum", "corr2cause", *ETHICS_SCENARIOS)

__all__ = [
    "Corr2CauseScenario",
    "ETHICS_SCENARIOS",
    "OfflineMATHScenario",
    "RUN_SPEC_NAMES",
    "SamSumScenario",
    "get_corr2cause_spec",
    "get_sam_sum_spec",
    "offline_scenario_spec",
]

"""A suite's eval instances without a model, for checks that need the items but not the answers
(`effbench contamination`, challenge/contamination.py): HELM's steps 1-2 only, with the same run
specs, ids and sample as `effbench run` (README, "Ranking and contamination").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from helm.benchmark.runner import downsample_eval_instances
from helm.benchmark.scenarios.scenario import EVAL_SPLITS, create_scenario, get_scenario_cache_path, with_instance_ids

from effbench.challenge.helm_bridge import HelmSession, parse_entry
from effbench.challenge.helm_models import register_placeholder_model
from effbench.challenge.helm_offline import adapt_offline
from effbench.contracts import EffbenchError


@dataclass(frozen=True)
class EvalRun:
    """One run's eval instances (HELM `Instance`s of its eval splits), built without a model.
    Unpacks as (run, scenario, instances)."""

    run: str  # HELM's run name without the placeholder's model= argument
    scenario: str  # HELM scenario name
    instances: list
    entry: str = ""  # the suite entry it came from
    missing: str | None = None  # offline: why the run has no instances (its data files are missing)

    def __iter__(self):
        return iter((self.run, self.scenario, self.instances))


def suite_eval_instances(
    suite, helm_dir: Path, max_eval_instances: int | None = None, run_filter: str | None = None, offline: bool = False
) -> list[EvalRun]:
    """HELM's steps 1-2 only for every run of `suite` (an effbench.challenge.suites.Suite): create the
    scenario, get its instances, give them ids, downsample the eval splits, keep the eval splits.
    The instances, ids and sample are those `effbench run` evaluates with the same options (the
    same `HelmSession.run_specs`; HELM's downsampling is seeded). No model or tokenizer is loaded:
    a placeholder model is registered (metadata and a deployment, once per process) so that HELM
    can build the RunSpecs. Datasets must already be under `helm_dir` (effbench.challenge.data.stage) or
    be downloadable by HELM. `run_filter`: a glob on run names or entries, as `effbench run --runs`.
    `offline` (local data staged, as `effbench run --data-dir`): scenarios read as in `adapt_offline`;
    a run whose data files are missing comes back with no instances and `missing` saying which
    (effbench.challenge.data.missing_inputs); if no run has its data, that is an error."""
    import contextlib
    import fnmatch
    import io
    import sys

    placeholder = register_placeholder_model()
    out: list[EvalRun] = []
    entries = suite.entries()
    if offline:
        from effbench.challenge.data import missing_inputs

        entries = []
        for entry, n in suite.entries():  # run specs that read their data when built (BIG-bench)
            miss = missing_inputs(*parse_entry(entry), helm_dir)
            if miss is None:
                entries.append((entry, n))
            elif not run_filter or fnmatch.fnmatch(entry, run_filter):
                out.append(EvalRun(entry, entry.split(":", 1)[0], [], entry, miss.line(entry)))
    with contextlib.redirect_stdout(io.StringIO()):  # HELM prints where it looks for credentials
        session = HelmSession(helm_dir, suite.name, parallelism=1)
    specs = session.run_specs(entries, placeholder, suite.max_eval_instances, max_eval_instances)
    model_arg = "model=" + placeholder.replace("/", "_")
    for entry, spec in specs:
        name = spec.name.replace("," + model_arg, "").replace(":" + model_arg, "")
        if run_filter and not (fnmatch.fnmatch(name, run_filter) or fnmatch.fnmatch(entry, run_filter)):
            continue
        splits = spec.adapter_spec.eval_splits or EVAL_SPLITS
        if offline:
            from effbench.challenge.data import missing_inputs

            spec, _ = adapt_offline(spec, helm_dir)
            miss = missing_inputs(spec.scenario_spec.class_name, spec.scenario_spec.args, helm_dir)
            if miss is not None:
                out.append(EvalRun(name, entry.split(":", 1)[0], [], entry, miss.line(name)))
                continue
        try:
            with contextlib.redirect_stdout(sys.stderr):  # HELM's download messages: not the report
                scenario = create_scenario(spec.scenario_spec)
                instances = scenario.get_instances(get_scenario_cache_path(str(helm_dir), scenario.name))
        except EffbenchError:
            raise
        except Exception as e:  # a dataset HELM cannot find or fetch
            first = (str(e).strip().splitlines() or [""])[0]
            raise EffbenchError(f"suite {suite.name}: run {name}: HELM cannot load its instances ({type(e).__name__}: {first}); local datasets: option --data-dir") from e
        if any(i.id is None for i in instances):
            instances = with_instance_ids(instances)
        if spec.adapter_spec.max_eval_instances is not None:
            instances = downsample_eval_instances(instances, spec.adapter_spec.max_eval_instances, splits)
        out.append(EvalRun(name, scenario.name, [i for i in instances if i.split in splits], entry))
    if run_filter and not out:
        raise EffbenchError(f"--runs: pattern {run_filter!r} matches no run of suite {suite.name}")
    if out and all(r.missing for r in out):
        raise EffbenchError(f"suite {suite.name}: no run has its data; first: {out[0].missing}")
    return out

"""Where effbench plugs into HELM (crfm-helm 0.5.16, pinned): plan, then execute, then score.

HELM's `Runner.run_one` interleaves the three per run. effbench splits them (README, "How it
works"): `plan_run` does steps 1-4 (scenario, downsample, augment, adapt) for every run before
the first request, so the whole workload is known; effbench's scheduler fills every
`RequestState.result` (to_generation_request, fill); `score_run` does steps 6-7 (annotate,
metrics, write the run folder) exactly as HELM does. Only HELM's public classes and functions are
used, so an upgrade that moves them fails loudly. The other modules that touch HELM:
helm_models.py (the models HELM sees), helm_offline.py (HELM without the network),
helm_eval_runs.py (eval instances without a model), helm_plugins/ (the closed suite's scenarios).
"""

from __future__ import annotations

import contextlib

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from helm.benchmark.adaptation.adapters.adapter_factory import AdapterFactory
from helm.benchmark.adaptation.request_state import RequestState
from helm.benchmark.adaptation.scenario_state import ScenarioState
from helm.benchmark.annotation_executor import AnnotationExecutionSpec, AnnotationExecutor
from helm.benchmark.data_preprocessor import DataPreprocessor
from helm.benchmark.executor import ExecutionSpec, Executor
from helm.benchmark.metrics.metric import PerInstanceStats, Stat, create_metric
from helm.benchmark.metrics.metric_service import MetricService
from helm.benchmark.presentation.run_entry import RunEntry
from helm.benchmark.run import run_entries_to_run_specs
from helm.benchmark.run_spec import RunSpec
from helm.benchmark.runner import (
    downsample_eval_instances,
    remove_per_instance_stats_nans,
    remove_stats_nans,
    set_benchmark_output_path,
)
from helm.benchmark.scenarios.scenario import EVAL_SPLITS, Scenario, create_scenario, get_scenario_cache_path, with_instance_ids
from helm.common.authentication import Authentication
from helm.common.general import asdict_without_nones, ensure_directory_exists, write
from helm.common.request import GeneratedOutput, RequestResult, Token
from helm.common.tokenization_request import TokenizationRequest
from helm.benchmark.window_services.tokenizer_service import TokenizerService

import effbench.challenge.helm_plugins  # noqa: F401  registers the closed suite's scenarios with HELM
from effbench.challenge.helm_instances import get_instances
from effbench.contracts import EffbenchError, GenerationRequest, GenerationResult, Origin
from effbench.paths import safe_name


@dataclass
class RunPlan:
    """One HELM run after adaptation: every request it will send is known."""

    spec: RunSpec
    scenario: Scenario
    request_states: list[RequestState]
    entry: str  # the suite's entry this run came from

    @property
    def name(self) -> str:
        return self.spec.name


def ensure_nltk_punkt_tab(cache_dir: Path) -> None:
    """HELM's metric modules call nltk.download("punkt_tab") on import, which reaches for the
    network. Where no punkt_tab is installed, point NLTK_DATA at an effbench folder holding one
    with empty parameter files: sentence splitting then has no abbreviation list,
    which no exact-match or ROUGE-2 score depends on."""
    import nltk

    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        return
    except LookupError:
        pass
    root = cache_dir / "nltk_data"
    english = root / "tokenizers" / "punkt_tab" / "english"
    english.mkdir(parents=True, exist_ok=True)
    for name in ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab"):
        (english / name).touch()
    if str(root) not in nltk.data.path:
        nltk.data.path.append(str(root))
    os.environ["NLTK_DATA"] = os.pathsep.join(filter(None, [os.environ.get("NLTK_DATA"), str(root)]))


def _network_error(e: OSError) -> bool:
    """A download that could not reach its server (not a local file problem)."""
    import socket
    import urllib.error

    return isinstance(e, (urllib.error.URLError, socket.gaierror, ConnectionError, TimeoutError))


HELM_LOG = "helm.log"  # what HELM prints, kept next to its run folders


class HelmSession:
    """HELM's services for one output folder: tokenizer and metric services, annotation executor."""

    def __init__(self, helm_dir: Path, suite: str, parallelism: int = 4, instance_cache: Path | None = None):
        self.helm_dir = helm_dir
        self.instance_cache = instance_cache  # scenario instances kept across runs (helm_instances.py); None: none
        self.suite = suite
        self.parallelism = parallelism
        local_path = helm_dir / "prod_env"
        ensure_directory_exists(str(local_path))
        set_benchmark_output_path(str(helm_dir))
        spec = ExecutionSpec(url=None, auth=Authentication(""), local_path=str(local_path), parallelism=parallelism)
        # HELM prints where it looks for credentials ("Looking in path: ...") on stdout, where
        # effbench's results go: into HELM's log file in its output folder instead
        with open(helm_dir / HELM_LOG, "a", encoding="utf-8") as log, contextlib.redirect_stdout(log):
            self.executor = Executor(spec)
            self.tokenizer_service = TokenizerService(self.executor.context)
            self.metric_service = MetricService(self.executor.context)
            self.annotator = AnnotationExecutor(AnnotationExecutionSpec(local_path=str(local_path), parallelism=parallelism))
        self.runs_dir = helm_dir / "runs" / safe_name(suite)
        self.eval_cache = self.runs_dir / "eval_cache"
        ensure_directory_exists(str(self.eval_cache))

    def run_specs(
        self, entries: list[tuple[str, int | None]], helm_model: str, default_max: int | None, cap: int | None = None
    ) -> list[tuple[str, RunSpec]]:
        """Suite entries (HELM run-entry descriptions without a model) -> RunSpecs for `helm_model`.
        Instances per run: the entry's own max_eval_instances wins over the suite default (as in
        the challenge); `cap` (--max-eval-instances) bounds both, for quick versions of a suite."""
        out = []
        for entry, per_entry in entries:
            desc = f"{entry},model={helm_model}" if ":" in entry else f"{entry}:model={helm_model}"
            n = per_entry if per_entry is not None else default_max
            n = min(n, cap) if (n is not None and cap is not None) else (n or cap)
            try:
                specs = run_entries_to_run_specs([RunEntry(description=desc, priority=1, groups=None)], max_eval_instances=n)
            except Exception as e:  # HELM raises bare ValueError/KeyError for unknown scenarios or args
                if isinstance(e, OSError) and _network_error(e):  # a download (BIG-bench reads the task's files)
                    from effbench.challenge.data import offline_hint

                    raise EffbenchError(f"suite {self.suite}: run entry '{entry}': HELM cannot download its data"
                                        f" ({type(e).__name__}); {offline_hint([en for en, _ in entries])}") from e
                raise EffbenchError(f"suite {self.suite}: run entry '{entry}': HELM cannot build it ({type(e).__name__}: {e})") from e
            out.extend((entry, s) for s in specs)
        return out

    def plan_run(self, entry: str, spec: RunSpec) -> RunPlan:
        """HELM's steps 1-4: scenario instances, downsampling, augmentation, adaptation."""
        scenario = create_scenario(spec.scenario_spec)
        try:
            instances = get_instances(scenario, spec.scenario_spec, Path(get_scenario_cache_path(str(self.helm_dir), scenario.name)),
                                      self.instance_cache)
        except OSError as e:  # HELM downloads what is not staged: no network here
            if not _network_error(e):
                raise
            from effbench.challenge.data import offline_hint

            raise EffbenchError(f"suite {self.suite}: run {spec.name}: HELM cannot download its data ({type(e).__name__});"
                                f" {offline_hint([entry])}") from e
        if any(i.id is None for i in instances):
            instances = with_instance_ids(instances)
        if spec.adapter_spec.max_eval_instances is not None:
            splits = spec.adapter_spec.eval_splits or EVAL_SPLITS
            instances = downsample_eval_instances(instances, spec.adapter_spec.max_eval_instances, splits)
        instances = DataPreprocessor(spec.data_augmenter_spec).preprocess(instances, self.parallelism)
        adapter = AdapterFactory.get_adapter(spec.adapter_spec, self.tokenizer_service)
        states = adapter.adapt(instances, self.parallelism)
        return RunPlan(spec, scenario, states, entry)

    def count_tokens(self, helm_model: str, text: str) -> int:
        resp = self.tokenizer_service.tokenize(TokenizationRequest(text=text, tokenizer=helm_model, encode=True))
        return len(resp.tokens)

    def score_run(self, plan: RunPlan, states: list[RequestState]) -> tuple[list[Stat], Path]:
        """HELM's steps 6-7 on filled request states; writes the run folder HELM would write."""
        spec = plan.spec
        scenario_state = ScenarioState(adapter_spec=spec.adapter_spec, request_states=states, annotator_specs=spec.annotators)
        scenario_state = self.annotator.execute(scenario_state)
        stats: list[Stat] = []
        per_instance: list[PerInstanceStats] = []
        for metric_spec in spec.metric_specs:
            result = create_metric(metric_spec).evaluate(scenario_state, self.metric_service, str(self.eval_cache), self.parallelism)
            stats.extend(result.aggregated_stats)
            per_instance.extend(result.per_instance_stats)
        run_path = self.runs_dir / safe_name(spec.name)  # a run entry may hold "/" or ".."
        ensure_directory_exists(str(run_path))
        stats = remove_stats_nans(stats)
        files = {
            "run_spec.json": asdict_without_nones(spec),
            "scenario.json": asdict_without_nones(plan.scenario),
            "scenario_state.json": asdict_without_nones(scenario_state),
            "stats.json": [asdict_without_nones(s) for s in stats],
            "per_instance_stats.json": list(map(asdict_without_nones, remove_per_instance_stats_nans(per_instance))),
        }
        for name, obj in files.items():
            write(str(run_path / name), json.dumps(obj, indent=2))
        return stats, run_path


def to_generation_request(state: RequestState, suite: str, run: str, index: int) -> GenerationRequest:
    r = state.request
    return GenerationRequest(
        id=f"{run}#{index}",
        prompt=r.prompt,
        max_tokens=r.max_tokens,
        stop_sequences=tuple(r.stop_sequences),
        temperature=r.temperature,
        top_p=r.top_p,
        num_completions=r.num_completions,
        top_k_per_token=r.top_k_per_token,
        echo_prompt=r.echo_prompt,
        seed=None,
        origin=Origin(suite=suite, run=run, instance=state.instance.id or "", index=index),
    )


def to_request_result(res: GenerationResult) -> RequestResult:
    """effbench result -> HELM RequestResult. A failed request becomes an empty completion with
    success=False and its error kept, so HELM's metrics score it as wrong, not skip it."""
    if res.error is not None:
        return RequestResult(
            success=False,
            embedding=[],
            completions=[GeneratedOutput(text="", logprob=0.0, tokens=[])],
            cached=False,
            error=res.error,
            request_time=res.timings.latency,
        )
    completions = [
        GeneratedOutput(
            text=c.text,
            logprob=c.logprob,
            tokens=[Token(text=t.text, logprob=t.logprob) for t in c.tokens],
            finish_reason={"reason": c.finish_reason},
        )
        for c in res.completions
    ]
    return RequestResult(
        success=True,
        embedding=[],
        completions=completions,
        cached=False,
        request_time=res.timings.latency,
        request_datetime=int(res.timings.started) if res.timings.started else None,
        batch_size=res.batch_size,
        batch_request_time=res.timings.latency,
    )


def unanswered_result(request_id: str) -> GenerationResult:
    """What an unanswered request counts as under item semantics: an empty completion, flagged."""
    import time

    from effbench.contracts import Timings

    now = time.time()
    return GenerationResult(request_id, (), 0, 0, Timings(now), error="not answered before the deadline")


def fill(state: RequestState, res: GenerationResult) -> RequestState:
    return replace(state, result=to_request_result(res))


def parse_entry(entry: str) -> tuple[str, dict]:
    """A run-entry description -> (run spec function name, its arguments), as HELM parses it."""
    from helm.common.object_spec import parse_object_spec

    spec = parse_object_spec(entry)
    return spec.class_name, dict(spec.args)

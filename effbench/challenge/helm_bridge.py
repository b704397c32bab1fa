"""Where effbench plugs into HELM (crfm-helm 0.5.16, pinned): plan, then execute, then score.

HELM's `Runner.run_one` interleaves the three per run. effbench splits them (HELM-NOTES.md):
`plan_run` does steps 1-4 (scenario, downsample, augment, adapt) for every run before the first
request, so the whole workload is known; effbench's scheduler fills every `RequestState.result`;
`score_run` does steps 6-7 (annotate, metrics, write the run folder) exactly as HELM does.
Only HELM's public classes and functions are used, so an upgrade that moves them fails loudly.
"""

from __future__ import annotations

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
from helm.benchmark.metrics.common_metric_specs import get_basic_generation_metric_specs
from helm.benchmark.metrics.metric import PerInstanceStats, Stat, create_metric
from helm.benchmark.metrics.metric_service import MetricService
from helm.benchmark.model_deployment_registry import ClientSpec, ModelDeployment, register_model_deployment
from helm.benchmark.model_metadata_registry import get_unknown_model_metadata, register_model_metadata
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
from helm.benchmark.tokenizer_config_registry import TokenizerConfig, TokenizerSpec, register_tokenizer_config
from helm.clients.client import Client
from helm.common.authentication import Authentication
from helm.common.general import asdict_without_nones, ensure_directory_exists, write
from helm.common.request import GeneratedOutput, Request, RequestResult, Token
from helm.common.tokenization_request import TokenizationRequest
from helm.benchmark.window_services.tokenizer_service import TokenizerService

import effbench.challenge.helm_plugins  # noqa: F401  registers the closed suite's scenarios with HELM
from effbench.atomic import write_text_atomic
from effbench.contracts import EffbenchError, GenerationRequest, GenerationResult, Origin
from effbench.challenge.helm_plugins import offline_scenario_spec
from effbench.paths import safe_name

_registered: set[str] = set()


class NotExecutedByHelmClient(Client):
    """The client HELM sees for an effbench model. effbench's scheduler fills every result itself;
    if HELM ever tried to send a request through a client, that would bypass the scheduler and
    its budget, so this fails loudly instead of answering."""

    def __init__(self, **_: object):
        pass

    def make_request(self, request: Request) -> RequestResult:
        raise RuntimeError("effbench models are executed by effbench's scheduler, not by a HELM client")


def register_model(helm_name: str, tokenizer_dir: Path | None, max_sequence_length: int, endpoint: str | None = None,
                   *, trust_remote_code: bool) -> None:
    """Register deployment, tokenizer and metadata for `helm_name` (idempotent per process).
    A local tokenizer folder is read by HELM's HuggingFaceTokenizer; a remote server (backend
    http) tokenizes through its own /tokenize and /decode with HELM's HTTPModelTokenizer.
    `trust_remote_code` (the command line's flag) is passed to every tokenizer load explicitly:
    left unset, transformers asks on a terminal whether to run a folder's code."""
    if helm_name in _registered:
        return
    if tokenizer_dir is not None:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True, trust_remote_code=trust_remote_code)
        # HELM fits prompts with token counts that leave out the special tokens the tokenizer adds
        # (BOS); the model sees them, so HELM's window is the model's minus those.
        n_special = len(tok.encode("", add_special_tokens=True))
        spec = TokenizerSpec(class_name="helm.tokenizers.huggingface_tokenizer.HuggingFaceTokenizer",
                             args={"pretrained_model_name_or_path": str(tokenizer_dir), "trust_remote_code": trust_remote_code})
        eot, prefix = tok.eos_token or "", tok.bos_token or ""
    else:
        n_special, eot, prefix = 0, "", ""
        spec = TokenizerSpec(class_name="helm.tokenizers.http_model_tokenizer.HTTPModelTokenizer", args={"base_url": endpoint})
    register_model_metadata(get_unknown_model_metadata(helm_name))
    register_tokenizer_config(TokenizerConfig(name=helm_name, tokenizer_spec=spec, end_of_text_token=eot, prefix_token=prefix))
    register_model_deployment(
        ModelDeployment(
            name=helm_name,
            client_spec=ClientSpec(class_name=f"{__name__}.NotExecutedByHelmClient", args={}),
            model_name=helm_name,
            tokenizer_name=helm_name,
            max_sequence_length=max_sequence_length - n_special,
        )
    )
    _registered.add(helm_name)


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
    with empty parameter files (STACK-NOTES.md): sentence splitting then has no abbreviation list,
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


class HelmSession:
    """HELM's services for one output folder: tokenizer and metric services, annotation executor."""

    def __init__(self, helm_dir: Path, suite: str, parallelism: int = 4):
        self.helm_dir = helm_dir
        self.suite = suite
        self.parallelism = parallelism
        local_path = helm_dir / "prod_env"
        ensure_directory_exists(str(local_path))
        set_benchmark_output_path(str(helm_dir))
        spec = ExecutionSpec(url=None, auth=Authentication(""), local_path=str(local_path), parallelism=parallelism)
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
                raise EffbenchError(f"suite {self.suite}: run entry '{entry}': HELM cannot build it ({type(e).__name__}: {e})") from e
            out.extend((entry, s) for s in specs)
        return out

    def plan_run(self, entry: str, spec: RunSpec) -> RunPlan:
        """HELM's steps 1-4: scenario instances, downsampling, augmentation, adaptation."""
        scenario = create_scenario(spec.scenario_spec)
        instances = scenario.get_instances(get_scenario_cache_path(str(self.helm_dir), scenario.name))
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


def helm_model_name(submission_name: str) -> str:
    return f"effbench/{submission_name}"


# HELM builds RunSpecs only for a model; checks that need the eval items but no model
# (`effbench contamination`) name this placeholder, whose client refuses every request.
PLACEHOLDER_MODEL = "effbench/no-model"


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

    if PLACEHOLDER_MODEL not in _registered:
        register_model_metadata(get_unknown_model_metadata(PLACEHOLDER_MODEL))
        register_model_deployment(
            ModelDeployment(
                name=PLACEHOLDER_MODEL,
                client_spec=ClientSpec(class_name=f"{__name__}.NotExecutedByHelmClient", args={}),
                model_name=PLACEHOLDER_MODEL,
            )
        )
        _registered.add(PLACEHOLDER_MODEL)
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
    specs = session.run_specs(entries, PLACEHOLDER_MODEL, suite.max_eval_instances, max_eval_instances)
    model_arg = "model=" + PLACEHOLDER_MODEL.replace("/", "_")
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



SERVED_MODEL = "effbench/served"


def write_http_prod_env(env_dir: Path, url: str, max_sequence_length: int = 2047) -> str:
    """A prod_env folder (helm-run --local-path) that points HELM's own HTTPModelClient and
    HTTPModelTokenizer at a server speaking the challenge's API, the way participants ran the
    unmodified helm-run against their containers. Returns the model name for run entries."""
    import datetime

    import yaml  # PyYAML: a HELM dependency

    env_dir.mkdir(parents=True, exist_ok=True)
    client = {"class_name": "helm.clients.http_model_client.HTTPModelClient", "args": {"base_url": url}}
    tokenizer = {"class_name": "helm.tokenizers.http_model_tokenizer.HTTPModelTokenizer", "args": {"base_url": url}}
    files = {
        "model_deployments.yaml": {"model_deployments": [{
            "name": SERVED_MODEL, "model_name": SERVED_MODEL, "tokenizer_name": SERVED_MODEL,
            "max_sequence_length": max_sequence_length, "client_spec": client}]},
        "tokenizer_configs.yaml": {"tokenizer_configs": [{
            "name": SERVED_MODEL, "tokenizer_spec": tokenizer, "end_of_text_token": "</s>", "prefix_token": "<s>"}]},
        "model_metadata.yaml": {"models": [{
            "name": SERVED_MODEL, "display_name": "effbench served", "description": "effbench serve",
            "creator_organization_name": "effbench", "access": "open", "release_date": datetime.date.today(),
            "tags": ["TEXT_MODEL_TAG", "FULL_FUNCTIONALITY_TEXT_MODEL_TAG"]}]},
    }
    for name, content in files.items():
        write_text_atomic(env_dir / name, yaml.safe_dump(content, sort_keys=False))
    return SERVED_MODEL

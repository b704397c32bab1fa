"""Plan a suite: every HELM run built up to its requests (HELM's steps 1-4) and every data check
passed, with no model loaded: a missing file costs seconds, not a model load. Also the prompts'
token counts and prefix groups, which the scheduler batches and orders by.

RunOptions are the options of one `effbench run` (run_config.json keeps them for --resume).
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from effbench.challenge.suites import Suite
from effbench.contracts import EffbenchError, GenerationRequest, GenerationResult, MissingData, Order, Semantics
from effbench.submission import Submission

if TYPE_CHECKING:
    from effbench.predict.profiler import Telemetry


@dataclass
class RunOptions:
    out: Path
    max_eval_instances: int | None = None
    run_filter: str | None = None  # glob on run names or entries, e.g. "synthetic_reasoning*"
    entries: list[str] | None = None  # only these suite entries: one shard of `run --shards` (effbench/fleet)
    cache_dir: Path | None = None
    data_dir: Path | None = None  # local copies of public datasets (effbench.challenge.data); implies offline
    missing_data: MissingData = "auto"
    track: str = "local"  # the hardware track this run stands for (effbench rank groups by it)
    budget_minutes: float | None = None  # None: the suite's own; 0 or less: no deadline
    order: Order = "effbench"
    semantics: Semantics = "item"
    in_process: bool = False  # backend in this process: faster start, but no deadline enforcement
    resume: bool = False  # continue from OUT/journal.jsonl
    parallelism: int = 4

    def to_json(self) -> dict:
        """For run_config.json: without `out` (the folder is wherever it is now: --resume takes
        it from the command line) and without `resume`; paths as config_path stores them."""
        return {k: (config_path(v, self.out) if isinstance(v, Path) else v) for k, v in self.__dict__.items()
                if k not in ("out", "resume")}

    @classmethod
    def from_json(cls, d: dict) -> "RunOptions":
        paths = {"out", "cache_dir", "data_dir"}
        return cls(**{k: (Path(v) if k in paths and v is not None else v) for k, v in d.items()})


def config_path(path: Path, out: Path) -> str:
    """A path for run_config.json: relative to OUT when inside it (the folder may be moved or
    copied, and a resume must never write into the old place), else absolute (a resume may run
    from another working directory)."""
    p, root = Path(os.path.abspath(path)), Path(os.path.abspath(out))
    return str(p.relative_to(root)) if p == root or root in p.parents else str(p)


@dataclass
class Progress:
    """Callbacks for a live view; all optional."""

    on_phase: Callable[[str], None] = lambda phase: None
    on_plan: Callable[[dict[str, int]], None] = lambda requests_per_run: None
    on_batch: Callable[[list[GenerationRequest], list[GenerationResult]], None] = lambda reqs, res: None
    on_warning: Callable[[str], None] = lambda line: None
    # execution starts: (seconds of budget left or None, total requests to run, telemetry sampler)
    on_execute: Callable[[float | None, int, "Telemetry"], None] = lambda budget_s, n, sampler: None


@dataclass
class SuitePlan:
    """Every run of a suite after HELM's planning: what will run, what cannot and why."""

    specs: list  # (entry, RunSpec) after the run filter
    plans: list  # helm_bridge.RunPlan of each runnable run
    not_run: dict[str, str]  # run (or entry) name -> why it cannot run
    notes: dict[str, list[str]]  # run name -> what offline mode changed
    staged: list[str]  # datasets linked from --data-dir

    def requests(self, suite_name: str) -> list[GenerationRequest]:
        from effbench.challenge.helm_bridge import to_generation_request

        return [to_generation_request(st, suite_name, p.name, i) for p in self.plans for i, st in enumerate(p.request_states)]


def plan_suite(submission: Submission, suite: Suite, opts: RunOptions, session, progress: Progress,
               on_data_checked: Callable[[], None] | None = None) -> SuitePlan:
    """Everything HELM does before the first request, and every data check, with no model
    loaded: a broken data file costs seconds, not a model load. `on_data_checked` runs once the
    data files are checked (staged; a run whose files are missing is only left out), before
    the tokenizer loads and HELM builds the instances and requests (the slow part): run_suite
    starts loading the model there, so the worker's imports overlap the parent's."""
    from effbench.challenge.helm_bridge import parse_entry
    from effbench.challenge.helm_models import helm_model_name, register_model
    from effbench.challenge.helm_offline import adapt_offline, stage_perturbation_resources

    helm_dir = session.helm_dir
    staged: list[str] = []
    if opts.data_dir is not None:
        from effbench.challenge.data import datasets_for, stage

        staged = stage(opts.data_dir, helm_dir, datasets_for({parse_entry(e)[0] for e, _ in suite.entries()}))
        stage_perturbation_resources(opts.data_dir, helm_dir)
    if submission.tokenizer_dir is None:  # a remote server: HELM will tokenize through it, so it must answer now
        from effbench.backends.http import HTTPBackend

        probe = HTTPBackend(submission)
        probe.start()
        probe.close()
    if on_data_checked is not None:
        on_data_checked()
    helm_name = helm_model_name(submission.name)
    register_model(helm_name, submission.tokenizer_dir, submission.manifest.limits.max_sequence_length, submission.manifest.endpoint,
                   trust_remote_code=submission.trust_remote_code)

    not_run: dict[str, str] = {}
    entries = []
    for entry, n in suite.entries():
        fn, args = parse_entry(entry)
        if opts.run_filter and not may_match(opts.run_filter, entry, fn):
            continue
        if opts.entries is not None and entry not in opts.entries:
            continue
        reason = data_problem(entry, fn, args, helm_dir, staged, opts) if opts.data_dir else None
        if reason is not None:  # the run spec itself would need the data (BIG-bench)
            not_run[entry] = reason
            continue
        entries.append((entry, n))
    specs = session.run_specs(entries, helm_name, suite.max_eval_instances, opts.max_eval_instances)
    if opts.run_filter:
        match = lambda name, entry: fnmatch.fnmatch(name, opts.run_filter) or fnmatch.fnmatch(entry, opts.run_filter)  # noqa: E731
        specs = [(e, s) for e, s in specs if match(s.name, e)]
        not_run = {k: v for k, v in not_run.items() if match(k, k)}
        if not specs and not not_run:
            raise EffbenchError(f"--runs: pattern {opts.run_filter!r} matches no run of suite {suite.name}")

    notes: dict[str, list[str]] = {}
    runnable = []
    for entry, spec in specs:
        if opts.data_dir is not None:
            spec, notes[spec.name] = adapt_offline(spec, helm_dir)
            sc = spec.scenario_spec
            reason = data_problem(spec.name, sc.class_name, sc.args, helm_dir, staged, opts)
            if reason is not None:
                not_run[spec.name] = reason
                continue
        runnable.append((entry, spec))
    for line in not_run.values():
        progress.on_warning(f"not run: {line}")
    plans = [session.plan_run(entry, spec) for entry, spec in runnable]
    return SuitePlan(specs, plans, not_run, notes, staged)


def may_match(pattern: str, entry: str, fn: str) -> bool:
    """Whether an entry can yield a run matching --runs: by its text, or by its run spec function
    (HELM's run names start with it), so the data of filtered-out entries is not asked for."""
    head = pattern.split(":", 1)[0].split(",", 1)[0]
    return fnmatch.fnmatch(entry, pattern) or fnmatch.fnmatch(fn, head)


def check_run_filter(suite: Suite, pattern: str | None) -> None:
    """--runs refused before any planning when no entry of the suite can yield a matching run: not
    by its text, its run spec function, or a name that starts with that function (HELM's run
    names do: `dyck_language:num_parenthesis_pairs=2` runs as `dyck_language_np=2`). Permissive
    where unsure; planning still says when nothing matched."""
    if not pattern:
        return
    literal = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
    for entry, _ in suite.entries():
        fn = entry.split(":", 1)[0]
        if may_match(pattern, entry, fn) or literal.startswith(fn) or fn.startswith(literal):
            return
    raise EffbenchError(f"--runs: pattern {pattern!r} matches no run of suite {suite.name}"
                        f" (entries: {', '.join(e for e, _ in suite.entries()[:4])}{', ...' if len(suite.runs) > 4 else ''})")


def data_problem(name: str, class_name: str, args: dict, helm_dir: Path, staged: list[str], opts: RunOptions) -> str | None:
    """Why a run cannot run on the local data, or None. A dataset that is absent altogether
    stops the run (policy "auto"); one that is present but incomplete (BBQ with 6 of its 11
    categories) only costs its runs, which are recorded as not run."""
    from effbench.challenge.data import missing_inputs

    miss = missing_inputs(class_name, args, helm_dir)
    if miss is None:
        return None
    policy = opts.missing_data
    if policy == "stop" or (policy == "auto" and miss.dataset not in staged):
        raise EffbenchError(miss.line(name))
    return miss.line(name)


def prompt_shapes(submission: Submission, requests: list[GenerationRequest]) -> tuple[list[GenerationRequest], dict[str, int], dict]:
    """(the requests carrying their prompt token ids, prompt tokens per request, prefix groups):
    what the scheduler batches and orders by. Each prompt is tokenized here, once: the backend
    runs these ids (GenerationRequest.prompt_token_ids), so the lengths batched by are the
    lengths run."""
    from dataclasses import replace

    from effbench.execute.prefix import prefix_groups

    ids = prompt_tokens(submission, requests)
    tokenized = [replace(r, prompt_token_ids=tuple(ids[r.id])) for r in requests]
    return tokenized, {i: len(t) for i, t in ids.items()}, prefix_groups(requests, ids)


def prompt_tokens(submission: Submission, requests: list[GenerationRequest]) -> dict[str, list[int]]:
    """Prompt token ids of every request, with the submission's own tokenizer (for batching and
    prefix groups); a remote server's through its /tokenize."""
    if submission.tokenizer_dir is None:
        from concurrent.futures import ThreadPoolExecutor

        from effbench.backends.http import HTTPBackend

        remote = HTTPBackend(submission)
        remote.start()
        try:
            with ThreadPoolExecutor(8) as pool:
                tokens = list(pool.map(lambda r: list(remote.tokenize(r.prompt)), requests))
        finally:
            remote.close()
        return {r.id: t for r, t in zip(requests, tokens)}
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(submission.tokenizer_dir), local_files_only=True,
                                        trust_remote_code=submission.trust_remote_code)
    ids = tok([r.prompt for r in requests], add_special_tokens=True)["input_ids"] if requests else []
    return {r.id: x for r, x in zip(requests, ids)}

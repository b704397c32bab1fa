"""The commands around a run: build the demo submission, list the suites, rank results, look
for contamination, serve a submission over HTTP, measure this machine's kernels."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from effbench.cli.common import AllowOutsidePaths, AllowPickle, TrustRemoteCode, console, fail, out_console
from effbench.contracts import BackendName, EffbenchError


def demo(
    out: Annotated[Path, typer.Argument(help="Folder to create (must be absent or empty).")],
    hidden_size: Annotated[int, typer.Option(help="Model width; head_dim stays 64.")] = 128,
    layers: Annotated[int, typer.Option(help="Number of decoder layers.")] = 2,
    no_adapter: Annotated[bool, typer.Option("--no-adapter", help="Build the base model only.")] = False,
    seed: Annotated[int, typer.Option(help="Seed for tokenizer corpus and weights.")] = 0,
    train_steps: Annotated[int, typer.Option(min=0, help="Steps of training the adapter on synthetic Dyck completions (0: a random adapter, every score 0).")] = 60,
) -> None:
    """Build the demo submission, named after OUT: a tokenizer trained locally, a small random Llama
    and a LoRA adapter trained briefly on synthetic Dyck sequences (so that the default suite's dyck
    run scores above the random base), offline and deterministic, in seconds."""
    from effbench.demo import TRAINING_NOTE, build_demo, name_for

    t0 = time.perf_counter()
    try:
        path = build_demo(out, hidden_size=hidden_size, num_layers=layers, num_heads=max(1, hidden_size // 64),
                          with_adapter=not no_adapter, seed=seed, name=name_for(out), train_steps=train_steps)
    except EffbenchError as e:
        fail(e)
    if (note := path / "adapter" / TRAINING_NOTE).is_file():
        t = json.loads(note.read_text())
        console.print(f"built in {time.perf_counter() - t0:.1f} s, the adapter trained {t['steps']} steps on {t['task']}"
                      f" (loss {t['final_loss']})", highlight=False)
    console.print(f"demo submission written to [bold]{path}[/]; next: effbench run {path}")


def suites() -> None:
    """List the built-in suites: runs (after HELM's few-shot expansion), eval instances, the most
    requests they can make (with augmentation), budget and weight."""
    from rich.table import Table

    from effbench.challenge.suites import available_suites, load_suite, suite_size

    table = Table("suite", "entries", "runs", "instances", "requests (at most)", "budget (min)", "weight", "description")
    for name in available_suites():
        s = load_suite(name)
        runs, instances, requests = suite_size(s)
        table.add_row(name, str(len(s.runs)), str(runs), str(instances or "all"), str(requests or "all"),
                      f"{s.budget_minutes:g}", f"{s.weight:.3g}", s.description)
    out_console.print(table)


def rank(
    results: Annotated[list[Path], typer.Argument(help="results.json files, or folders holding one (effbench run's output).")],
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write every value, win rate and score to this JSON file.")] = None,
) -> None:
    """Rank submissions as the NeurIPS 2023 LLM Efficiency Challenge did, each track on its own:
    win rate per metric against the field (missing = 0), mean per scenario, geometric mean per
    suite, weighted sum over suites (open 1/3, closed 2/3). Also prints the Spearman correlation
    of open and closed scores: a negative one means the open winners overfit the open tasks."""
    from effbench.challenge.rank_output import print_ranking, rank_files, write_json

    try:
        ranking = rank_files(results)
        if json_out is not None:
            write_json(ranking, json_out)
    except EffbenchError as e:
        fail(e)
    print_ranking(ranking, out_console)
    if json_out is not None:
        console.print(f"ranking written to [bold]{json_out}[/]")


def contamination(
    train_file: Annotated[Path, typer.Argument(help="Training data: .jsonl (string values), .csv/.tsv (cells) or .txt (lines).")],
    suite: Annotated[str, typer.Option(help="Built-in suite name (see scenarios/) or a suite .toml file.")] = "default",
    data_dir: Annotated[Optional[Path], typer.Option(help="Local copies of public datasets (e.g. ../shared/data), as for `effbench run`.")] = None,
    max_eval_instances: Annotated[Optional[int], typer.Option(min=1, help="Instances per run (bounds the suite's), as for `effbench run`.")] = None,
    runs: Annotated[Optional[str], typer.Option(help="Only runs whose name or entry matches this glob.")] = None,
    n: Annotated[int, typer.Option("--n", min=1, help="Words per n-gram (an item shorter than n words counts whole).")] = 13,
    threshold: Annotated[float, typer.Option(help="Flag an item when this fraction of its n-grams is in the training data (0-1].")] = 0.2,
    field: Annotated[Optional[str], typer.Option(help="Only this JSON key / CSV column of the training data.")] = None,
    examples: Annotated[int, typer.Option(min=0, help="Flagged items to show per run (--json has all).")] = 3,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write every count and every overlapping item to this JSON file.")] = None,
) -> None:
    """Which eval items of a suite occur in TRAIN_FILE: per run, the items whose word n-grams
    (13 words, lowercased) are in the training data, with the training line where each was
    found. No model is loaded; the training file is streamed. Details: effbench/challenge/contamination.py."""
    from effbench.challenge.contamination import check_suite, print_report, write_json

    try:
        report = check_suite(train_file, suite, data_dir=data_dir, max_eval_instances=max_eval_instances, run_filter=runs,
                             n=n, threshold=threshold, field_name=field)
        if json_out is not None:
            write_json(report, json_out)
    except EffbenchError as e:
        fail(e)
    print_report(report, out_console, examples)
    console.print(f"{report.flagged} of {report.eval_items} eval items flagged; {report.examples} training examples"
                  f" scanned in {report.seconds:.1f} s ({report.examples_per_s:,.0f}/s)"
                  + (f"; report written to [bold]{escape(str(json_out))}[/]" if json_out is not None else ""))


def serve(
    submission: Annotated[Path, typer.Argument(help="Submission folder (with effbench.toml).")],
    host: Annotated[str, typer.Option(help="Address to listen on. The default serves this machine only; 0.0.0.0 or a public address lets anyone who reaches the port run the model and read its answers (no authentication, no TLS).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port (HELM's HTTPModelClient uses 8080; the challenge's containers 80).")] = 8080,
    max_batch: Annotated[Optional[int], typer.Option(min=1, help="Most requests in one batch. Default: the submission's limits.max_batch_size (also the ceiling).")] = None,
    batch_window_ms: Annotated[float, typer.Option(min=0, help="How long a batch's first request waits for others to join it (milliseconds).")] = 5.0,
    one_at_a_time: Annotated[bool, typer.Option("--one-at-a-time", help="Batches of one, no gathering, no shared-prefix cache, as the challenge's sample servers did (for comparison).")] = False,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Merged-weights cache. Default: $EFFBENCH_CACHE or ~/.cache/effbench.")] = None,
    backend: Annotated[Optional[BackendName], typer.Option(help="Serve with this backend instead of the manifest's (hf, vllm).")] = None,
    max_queue: Annotated[Optional[int], typer.Option(min=1, help="Most requests waiting; past it a request gets 429 with Retry-After. Default: 4 batches, at least 64.")] = None,
    request_timeout: Annotated[float, typer.Option(min=0.001, help="Seconds a request may wait for its answer, queueing included, before a 504 (/health then says degraded while its batch runs on).")] = 600.0,
    allow_pickle: AllowPickle = False,
    trust_remote_code: TrustRemoteCode = False,
    allow_outside_paths: AllowOutsidePaths = False,
) -> None:
    """Serve SUBMISSION over the challenge's HTTP API until Ctrl-C: POST /process (the sample
    servers' and HELM's fields; top_k is accepted and ignored), POST /tokenize, POST /decode,
    GET /health (model, batch statistics). Concurrent requests are gathered into batches; bad
    requests get a 4xx with a JSON {"error": ...}, bodies over 1 MiB a 413. Details: effbench/serve/."""
    try:
        from effbench.serve import serve as run_server

        run_server(submission, host=host, port=port, max_batch=max_batch, window_s=batch_window_ms / 1000,
                   one_at_a_time=one_at_a_time, cache_dir=cache_dir, backend=backend,
                   max_queue=max_queue, request_timeout_s=request_timeout,
                   trust=dict(allow_pickle=allow_pickle, trust_remote_code=trust_remote_code, allow_outside_paths=allow_outside_paths),
                   on_ready=lambda line: console.print(escape(line), highlight=False, soft_wrap=True))
    except EffbenchError as e:
        fail(e)


def kernels(
    full: Annotated[bool, typer.Option("--full", help="Larger sizes and more repetitions.")] = False,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Reuse / store the measurement here (default: measure fresh).")] = None,
) -> None:
    """Measure this machine (copy bandwidth, matmul FLOP/s per dtype, attention) and print its
    profile next to the target cards' datasheets, with the conditions of every measured number."""
    from effbench.predict.hardware import measure_here
    from effbench.predict.kernels.table import print_profile

    print_profile(measure_here(quick=not full, cache_dir=cache_dir), out_console)

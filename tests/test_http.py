"""The challenge's HTTP API both ways, end to end: `effbench serve` in its own process on
127.0.0.1; the unmodified `helm-run` with HELM's HTTPModelClient (configured through prod_env
files) against it on real MMLU data; and `effbench run` with the http backend against it, which
must give the same metrics as the in-process backend (greedy)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from effbench.cli import app
from effbench.challenge.helm_models import write_http_prod_env
from effbench.results import completion_texts
from effbench.serve import wait_until_serving

runner = CliRunner()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(demo_submission, cache_dir):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "effbench.cli", "serve", str(demo_submission), "--port", str(port),
                             "--cache-dir", str(cache_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, proc, timeout_s=120)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def http_submission(tmp_path: Path, url: str) -> Path:
    sub = tmp_path / "remote"
    sub.mkdir()
    (sub / "effbench.toml").write_text(f'name = "demo"\nbackend = "http"\nendpoint = "{url}"\n[limits]\nmax_batch_size = 8\n')
    return sub


def test_effbench_run_over_http_equals_the_in_process_backend(server, demo_submission, cache_dir, tmp_path):
    local, remote = tmp_path / "local", tmp_path / "remote-out"
    res = runner.invoke(app, ["run", str(demo_submission), "--out", str(local), "--cache-dir", str(cache_dir), "--in-process"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["run", str(http_submission(tmp_path, server)), "--out", str(remote), "--cache-dir", str(cache_dir)])
    assert res.exit_code == 0, res.output
    a = json.loads((local / "results.json").read_text())
    b = json.loads((remote / "results.json").read_text())
    assert b["backend"]["name"] == "http"
    assert [r["metrics"] for r in a["runs"]] == [r["metrics"] for r in b["runs"]]
    assert completion_texts(local) == completion_texts(remote)
    assert b["totals"]["errors"] == 0 and b["totals"]["answered"] == 80


def test_unmodified_helm_run_against_effbench_serve(server, shared_data, tmp_path):
    out, env_dir = tmp_path / "helm-out", tmp_path / "prod_env"
    write_http_prod_env(env_dir, server)
    (out / "scenarios" / "mmlu").mkdir(parents=True)
    (out / "scenarios" / "mmlu" / "data").symlink_to(shared_data / "mmlu")
    helm_run = Path(sys.executable).parent / "helm-run"
    proc = subprocess.run([str(helm_run), "--run-entries", "mmlu:subject=philosophy,model=effbench/served", "--suite", "t",
                           "--max-eval-instances", "5", "-n", "4", "--output-path", str(out), "--local-path", str(env_dir)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "HELM_LOG_LEVEL": "WARNING"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run_dir,) = [p for p in (out / "runs" / "t").iterdir() if p.name.startswith("mmlu")]
    stats = json.loads((run_dir / "stats.json").read_text())
    assert any(s["name"]["name"] == "exact_match" for s in stats)
    state = json.loads((run_dir / "scenario_state.json").read_text())
    assert len(state["request_states"]) == 5 and all(rs["result"]["success"] for rs in state["request_states"])


def test_http_backend_errors_are_data_and_a_dead_server_is_one_line(server, tmp_path):
    from effbench.backends.http import HTTPBackend
    from effbench.contracts import GenerationRequest
    from effbench.submission import Submission

    be = HTTPBackend(Submission.load(http_submission(tmp_path, server)))
    be.start()
    try:
        ok, bad = be.generate([GenerationRequest(id="a", prompt="the answer is", max_tokens=4, top_k_per_token=3),
                               GenerationRequest(id="b", prompt="budget " * 3000, max_tokens=4)])
        assert ok.ok and ok.completions[0].tokens and len(ok.completions[0].tokens[0].top_logprobs) == 3
        assert not bad.ok and ("max_sequence_length" in bad.error or "400" in bad.error)
    finally:
        be.close()
    dead = tmp_path / "dead"
    dead.mkdir()
    (dead / "effbench.toml").write_text(f'name = "x"\nbackend = "http"\nendpoint = "http://127.0.0.1:{free_port()}"\n')
    res = runner.invoke(app, ["run", str(dead), "--out", str(tmp_path / "o"), "--in-process"])
    assert res.exit_code == 2 and "does not answer /tokenize" in res.output and "Traceback" not in res.output


def test_a_full_server_queue_is_waited_out_not_failed(tmp_path):
    """A 429 (the server's queue is full) is retried after its Retry-After, not a failed request:
    a real server on 127.0.0.1 answers 429 twice, then the tokens."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from effbench.backends.http import HTTPBackend
    from effbench.submission import Submission

    calls = []

    class Busy(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            calls.append(self.path)
            busy = len(calls) <= 2
            body = json.dumps({"error": "queue full"} if busy else {"tokens": [5, 6, 7]}).encode()
            self.send_response(429 if busy else 200)
            if busy:
                self.send_header("Retry-After", "1")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        sub = Submission.load(http_submission(tmp_path, f"http://127.0.0.1:{httpd.server_address[1]}"))
        backend = HTTPBackend(sub, retries=3)
        backend.start()  # its /tokenize ping meets the two 429s
        assert backend.tokenize("hello") == [5, 6, 7]
        assert calls == ["/tokenize"] * 4
    finally:
        httpd.shutdown()
        httpd.server_close()

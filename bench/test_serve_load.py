"""`effbench serve` under load: 30 concurrent clients x N requests against a real uvicorn server on
the demo model (HF backend), batched (the default: up to the submission's max_batch_size,
5 ms window) against the same server in --one-at-a-time mode (the challenge's sample servers),
measured in the same run on the same backend object.

The clients run in a separate process, as HELM does: in the server's process they would share its
GIL and the load generator, not the server, would set the pace. aiohttp is used when installed
(it is the lighter client; it comes with the vllm extra), httpx otherwise; extra_info says which.

Target (the issue): batched throughput >= 3x one-at-a-time at 30 concurrent clients.
Run: .venv/bin/pytest bench/test_serve_load.py --benchmark-only -s
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest

CLIENTS = 30
REQUESTS_PER_CLIENT = 4
NEW_TOKENS = 16
MAX_BATCH = 32  # the demo's limits.max_batch_size here: room for all 30 clients in one batch
TARGET_RATIO = 3.0


def prompt(client: int, k: int) -> str:
    return f"Question {client}.{k}: how many minutes are left in the budget? Answer:"


def _client_library() -> str:
    try:
        import aiohttp  # noqa: F401

        return "aiohttp"
    except ImportError:
        return "httpx"


async def _load(url: str) -> dict:
    """The load generator (run in its own process): CLIENTS clients, each sending REQUESTS_PER_CLIENT
    greedy requests one after the other; two untimed warm-up requests first."""
    lib = _client_library()
    if lib == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CLIENTS + 2), timeout=aiohttp.ClientTimeout(600))

        async def post(body):
            async with session.post(f"{url}/process", json=body) as r:
                return r.status, await r.text()

        close = session.close
    else:
        import httpx

        session = httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=CLIENTS + 2))

        async def post(body):
            r = await session.post(f"{url}/process", json=body)
            return r.status_code, r.text

        close = session.aclose
    answers: dict[str, str] = {}
    errors: list[str] = []

    def body(p: str) -> dict:
        return {"prompt": p, "max_new_tokens": NEW_TOKENS, "temperature": 1e-7}  # HELM's greedy

    async def client(i: int) -> None:
        for k in range(REQUESTS_PER_CLIENT):
            status, text = await post(body(prompt(i, k)))
            if status != 200:
                errors.append(f"{status}: {text[:200]}")
            else:
                answers[prompt(i, k)] = json.loads(text)["text"]

    try:
        for i in range(2):
            await post(body(prompt(-1, i)))
        t0 = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(CLIENTS)))
        seconds = time.perf_counter() - t0
    finally:
        await close()
    return {"seconds": seconds, "answers": answers, "errors": errors, "client": lib}


if __name__ == "__main__":  # the load generator's process: python test_serve_load.py URL
    print(json.dumps(asyncio.run(_load(sys.argv[1]))))
    sys.exit(0)

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
torch = pytest.importorskip("torch")

from effbench.serve import create_app, serve_in_thread  # noqa: E402


@pytest.fixture(scope="module")
def demo_backend(tmp_path_factory):
    from effbench.backends.hf import HFBackend
    from effbench.demo import build_demo
    from effbench.submission import Submission

    sub = build_demo(tmp_path_factory.mktemp("serve-demo") / "submission", max_batch_size=MAX_BATCH)
    be = HFBackend(Submission.load(sub), cache_dir=tmp_path_factory.mktemp("serve-cache"))
    be.start()
    yield be
    be.close()


def _measure(backend, *, one_at_a_time: bool) -> dict:
    with serve_in_thread(create_app(backend, one_at_a_time=one_at_a_time)) as url:
        proc = subprocess.run([sys.executable, __file__, url], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        out["stats"] = httpx.get(f"{url}/health").json()["stats"]
    out["req_per_s"] = CLIENTS * REQUESTS_PER_CLIENT / out["seconds"]
    return out


def test_batched_server_vs_one_at_a_time(benchmark, demo_backend):
    single = _measure(demo_backend, one_at_a_time=True)
    result = {}
    benchmark.pedantic(lambda: result.update(_measure(demo_backend, one_at_a_time=False)), rounds=1, iterations=1)
    batched = result

    n = CLIENTS * REQUESTS_PER_CLIENT
    assert not single["errors"] and not batched["errors"], (single["errors"] + batched["errors"])[:3]
    assert len(single["answers"]) == len(batched["answers"]) == n
    assert batched["answers"] == single["answers"]  # greedy: batching changes nothing in the answers
    assert single["stats"]["largest_batch"] == 1

    ratio = batched["req_per_s"] / single["req_per_s"]
    benchmark.extra_info.update(
        clients=CLIENTS,
        requests_per_client=REQUESTS_PER_CLIENT,
        max_new_tokens=NEW_TOKENS,
        max_batch=MAX_BATCH,
        batch_window_ms=5.0,
        model=f"demo (~0.6M-parameter random Llama + LoRA), HF backend on {demo_backend.device}",
        client=f"{batched['client']}, separate process",
        torch_threads=torch.get_num_threads(),
        one_at_a_time_req_per_s=round(single["req_per_s"], 2),
        batched_req_per_s=round(batched["req_per_s"], 2),
        ratio_batched_over_one_at_a_time=round(ratio, 2),
        batched_mean_batch=batched["stats"]["mean_batch"],
        batched_largest_batch=batched["stats"]["largest_batch"],
        batched_batches=batched["stats"]["batches"],
    )
    print(
        f"\n{CLIENTS} clients x {REQUESTS_PER_CLIENT} requests, {NEW_TOKENS} new tokens:"
        f" one-at-a-time {single['req_per_s']:.2f} req/s ({single['seconds']:.1f} s),"
        f" batched {batched['req_per_s']:.2f} req/s ({batched['seconds']:.1f} s; {batched['stats']['batches']} batches,"
        f" mean {batched['stats']['mean_batch']}, largest {batched['stats']['largest_batch']}),"
        f" ratio {ratio:.2f} (target >= {TARGET_RATIO:g})"
    )
    assert ratio >= TARGET_RATIO

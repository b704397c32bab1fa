"""`effbench serve`: a real uvicorn server on 127.0.0.1 over the demo model's HF backend, queried
with a real HTTP client: answers equal the backend's own, both field-name styles, batching under
concurrency, every bad input answered with a 4xx while the server keeps serving, and the server
under pressure: a poisoned request isolated from its batch-mates, a full queue (429), a hung batch
(504, /health degraded). Faults come from small wrappers around the shared backend, below."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from typer.testing import CliRunner  # noqa: E402

from effbench.cli import app as cli_app  # noqa: E402
from effbench.contracts import EffbenchError, GenerationRequest  # noqa: E402
from effbench.serve import create_app, serve_in_thread  # noqa: E402

PROMPTS = [
    "the answer is",
    "Question: how many minutes are in the budget?\nAnswer:",
    "one two three four five six seven eight nine ten",
    "Explicit is better than implicit.",
    "a",
    "score time budget minute second token prompt output input run suite scenario metric",
    "Errors should never pass silently. In the face of ambiguity,",
    "( ) [ ] { }",
    "the run is over",
    "minute minute minute",
    "In the face of ambiguity, refuse the temptation to guess.",
    "1 2 3 4 5",
]
GREEDY = 1e-7  # what HELM sends for temperature 0


@pytest.fixture(scope="module")
def server(hf_backend):
    # A 50 ms window makes gathering certain in the concurrency test; max batch: the demo's 8.
    with serve_in_thread(create_app(hf_backend, window_s=0.05)) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server, timeout=120) as c:
        yield c


def expected(hf_backend, prompt, **kw):
    """The backend's own answer (called while the server is idle: the backend is not thread-safe)."""
    (res,) = hf_backend.generate([GenerationRequest(id="x", prompt=prompt, **kw)])
    assert res.ok, res.error
    return res.completions[0]


def assert_same(body, completion):
    assert body["text"] == completion.text
    assert [t["text"] for t in body["tokens"]] == [t.text for t in completion.tokens]
    assert [t["logprob"] for t in body["tokens"]] == pytest.approx([t.logprob for t in completion.tokens], abs=1e-4)
    assert body["logprob"] == pytest.approx(completion.logprob, abs=1e-3)
    assert body["logprob"] == pytest.approx(sum(t["logprob"] for t in body["tokens"]), abs=1e-6)
    assert body["request_time"] >= 0


def still_serving(client):
    h = client.get("/health")
    assert h.status_code == 200 and h.json()["status"] == "ok"
    r = client.post("/process", json={"prompt": PROMPTS[0], "max_new_tokens": 2, "temperature": GREEDY})
    assert r.status_code == 200 and r.json()["tokens"]


# ---- answers -------------------------------------------------------------------------------------
def test_health_names_model_and_backend(client):
    h = client.get("/health").json()
    assert h["model"] == "demo" and h["backend"] == "hf" and h["max_batch"] == 8
    assert {"batches", "requests", "largest_batch", "batch_sizes"} <= set(h["stats"])


def test_helm_style_greedy_equals_backend(client, hf_backend):
    # Exactly the body HELM's HTTPModelClient sends for a greedy request.
    body = {"prompt": PROMPTS[1], "temperature": GREEDY, "num_return_sequences": 1, "max_new_tokens": 12,
            "top_p": 1.0, "echo_prompt": False, "top_k_per_token": 1, "stop_sequences": []}
    r = client.post("/process", json=body)
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"text", "tokens", "logprob", "request_time"}
    assert_same(r.json(), expected(hf_backend, PROMPTS[1], max_tokens=12, temperature=GREEDY))


def test_sample_server_style_fields(client, hf_backend):
    # The sample servers' names: num_samples, top_k (ignored), seed; defaults max_new_tokens 50, temperature 0.8.
    body = {"prompt": PROMPTS[2], "num_samples": 1, "max_new_tokens": 10, "top_k": 200, "temperature": GREEDY, "seed": 7}
    r = client.post("/process", json=body)
    assert r.status_code == 200, r.text
    assert_same(r.json(), expected(hf_backend, PROMPTS[2], max_tokens=10, temperature=GREEDY, seed=7))
    # Seeded sampling at the default temperature 0.8 is reproducible and equals the backend's.
    a, b = (client.post("/process", json={"prompt": PROMPTS[3], "max_new_tokens": 8, "seed": 3}).json() for _ in range(2))
    assert a["text"] == b["text"]
    assert_same(a, expected(hf_backend, PROMPTS[3], max_tokens=8, temperature=0.8, seed=3))


def test_default_max_new_tokens_is_50(client, hf_backend):
    r = client.post("/process", json={"prompt": PROMPTS[4], "temperature": GREEDY})
    assert_same(r.json(), expected(hf_backend, PROMPTS[4], max_tokens=50, temperature=GREEDY))


def test_stop_sequences_cut_the_text(client, hf_backend):
    full = expected(hf_backend, PROMPTS[0], max_tokens=30, temperature=GREEDY)
    stop = full.text[len(full.text) // 2 :][:2]  # a piece of its second half, so there is text before it
    assert stop.strip()
    r = client.post("/process", json={"prompt": PROMPTS[0], "max_new_tokens": 30, "temperature": GREEDY, "stop_sequences": [stop]})
    assert r.status_code == 200
    body = r.json()
    assert body["text"] == full.text[: full.text.find(stop)] and stop not in body["text"]
    assert_same(body, expected(hf_backend, PROMPTS[0], max_tokens=30, temperature=GREEDY, stop_sequences=(stop,)))


def test_echo_prompt_returns_prompt_and_its_logprobs(client, hf_backend):
    r = client.post("/process", json={"prompt": PROMPTS[3], "max_new_tokens": 0, "temperature": GREEDY, "echo_prompt": True})
    assert r.status_code == 200
    body = r.json()
    assert body["text"] == PROMPTS[3] and "".join(t["text"] for t in body["tokens"]) == PROMPTS[3]
    assert_same(body, expected(hf_backend, PROMPTS[3], max_tokens=0, temperature=GREEDY, echo_prompt=True))
    more = client.post("/process", json={"prompt": PROMPTS[3], "max_new_tokens": 4, "temperature": GREEDY, "echo_prompt": True}).json()
    assert more["text"].startswith(PROMPTS[3]) and len(more["tokens"]) > len(body["tokens"])


def test_top_k_per_token_gives_top_logprob_dicts(client, hf_backend):
    k = 4
    r = client.post("/process", json={"prompt": PROMPTS[5], "max_new_tokens": 6, "temperature": GREEDY, "top_k_per_token": k})
    assert r.status_code == 200
    body = r.json()
    want = expected(hf_backend, PROMPTS[5], max_tokens=6, temperature=GREEDY, top_k_per_token=k)
    assert_same(body, want)
    for tok, w in zip(body["tokens"], want.tokens):
        texts = [t for t, _ in w.top_logprobs]
        assert len(tok["top_logprob"]) == len(set(texts)) <= k  # a repeated piece text is kept once (the best)
        assert len(texts) == k
        best_text, best_lp = w.top_logprobs[0]
        assert tok["top_logprob"][best_text] == pytest.approx(best_lp, abs=1e-6)
        assert tok["top_logprob"][tok["text"]] == pytest.approx(tok["logprob"], abs=1e-4)  # greedy: the pick is the best
    assert any(len(t["top_logprob"]) == k for t in body["tokens"])


def test_num_return_sequences_answers_with_the_first(client, hf_backend):
    r = client.post("/process", json={"prompt": PROMPTS[6], "max_new_tokens": 5, "temperature": GREEDY, "num_return_sequences": 3})
    assert r.status_code == 200
    assert_same(r.json(), expected(hf_backend, PROMPTS[6], max_tokens=5, temperature=GREEDY, num_completions=3))


def test_tokenize_decode_round_trip(client, hf_backend):
    text = "Errors should never pass silently: 1234 ( ) [ ]\n\nok"
    t = client.post("/tokenize", json={"text": text})
    assert t.status_code == 200
    tokens = t.json()["tokens"]
    assert tokens == hf_backend.tokenize(text) and t.json()["request_time"] >= 0
    d = client.post("/decode", json={"tokens": tokens})
    assert d.status_code == 200 and d.json()["text"] == text
    # HELM's body: truncation and max_length.
    cut = client.post("/tokenize", json={"text": text, "truncation": True, "max_length": 3}).json()["tokens"]
    assert cut == tokens[:3]
    assert client.post("/tokenize", json={"text": text, "truncation": False, "max_length": 3}).json()["tokens"] == tokens


# ---- batching ------------------------------------------------------------------------------------
def test_concurrent_requests_are_batched_and_answered_correctly(client, server, hf_backend):
    want = {p: expected(hf_backend, p, max_tokens=8, temperature=GREEDY) for p in PROMPTS}
    before = client.get("/health").json()["stats"]
    start = threading.Barrier(len(PROMPTS))

    def one(prompt):
        with httpx.Client(base_url=server, timeout=120) as c:
            start.wait()
            return prompt, c.post("/process", json={"prompt": prompt, "max_new_tokens": 8, "temperature": GREEDY})

    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        answers = list(pool.map(one, PROMPTS))
    for prompt, r in answers:
        assert r.status_code == 200, r.text
        assert_same(r.json(), want[prompt])
    after = client.get("/health").json()["stats"]
    assert after["requests"] - before["requests"] == len(PROMPTS)
    batches = after["batches"] - before["batches"]
    assert batches < len(PROMPTS)  # so at least one batch held more than one request
    assert after["largest_batch"] > 1 and after["largest_batch"] <= 8


def test_one_at_a_time_never_batches(hf_backend, server):
    app = create_app(hf_backend, one_at_a_time=True, max_batch=8, window_s=1.0)  # one_at_a_time wins
    with serve_in_thread(app) as url:
        with ThreadPoolExecutor(4) as pool:
            rs = list(pool.map(lambda p: httpx.post(f"{url}/process", json={"prompt": p, "max_new_tokens": 3, "temperature": GREEDY}, timeout=120), PROMPTS[:4]))
        assert all(r.status_code == 200 for r in rs)
        h = httpx.get(f"{url}/health").json()
    assert h["one_at_a_time"] and h["max_batch"] == 1
    assert h["stats"]["batches"] == 4 and h["stats"]["largest_batch"] == 1


class Wrapped:
    """The shared HF backend behind a test's own generate(): the fault is the point of the test."""

    name = "hf"

    def __init__(self, inner):
        self.inner, self.capabilities, self.submission = inner, inner.capabilities, inner.submission
        self.tokenize, self.decode = inner.tokenize, inner.decode

    def generate(self, batch):
        return self.inner.generate(batch)


class Poisoned(Wrapped):
    """generate() raises when any prompt of the batch contains POISON; records every batch's prompts."""

    def __init__(self, inner):
        super().__init__(inner)
        self.batches: list[list[str]] = []

    def generate(self, batch):
        self.batches.append([r.prompt for r in batch])
        if any("POISON" in r.prompt for r in batch):
            raise RuntimeError("poisoned batch")
        return self.inner.generate(batch)


class Gated(Wrapped):
    """generate() blocks until `gate` is set: a hung batch that the test ends (bounded: 120 s)."""

    def __init__(self, inner):
        super().__init__(inner)
        self.gate, self.entered = threading.Event(), threading.Event()

    def generate(self, batch):
        self.entered.set()
        if not self.gate.wait(120):
            raise RuntimeError("the test never opened the gate")
        return self.inner.generate(batch)


def post_process(url, prompt, max_new_tokens=3):
    return httpx.post(f"{url}/process", json={"prompt": prompt, "max_new_tokens": max_new_tokens, "temperature": GREEDY}, timeout=120)


def poll_health(url, wanted, timeout_s=60.0):
    """GET /health until `wanted(health)` holds; fails with the last answer after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        h = httpx.get(f"{url}/health", timeout=30).json()
        if wanted(h):
            return h
        assert time.monotonic() < deadline, h
        time.sleep(0.05)


def test_a_poisoned_request_batched_with_good_ones_fails_alone(hf_backend):
    poison = "POISON " + PROMPTS[1]
    prompts = [PROMPTS[0], poison, PROMPTS[2], PROMPTS[3], PROMPTS[5]]
    want = {p: expected(hf_backend, p, max_tokens=6, temperature=GREEDY) for p in prompts if p != poison}
    backend = Poisoned(hf_backend)
    # max_batch = the number of requests and a long window: the batch closes when the last one arrives.
    with serve_in_thread(create_app(backend, max_batch=len(prompts), window_s=5.0)) as url:
        start = threading.Barrier(len(prompts))

        def send(prompt):
            with httpx.Client(base_url=url, timeout=120) as c:
                start.wait()
                return c.post("/process", json={"prompt": prompt, "max_new_tokens": 6, "temperature": GREEDY})

        with ThreadPoolExecutor(len(prompts)) as pool:
            answers = dict(zip(prompts, pool.map(send, prompts)))
        stats = httpx.get(f"{url}/health").json()["stats"]
    assert sorted(backend.batches[0]) == sorted(prompts)  # the poison really shared its batch with the good ones
    assert [poison] in backend.batches  # split down to the culprit alone
    assert answers[poison].status_code == 500 and "poisoned batch" in answers[poison].json()["error"]
    for p, completion in want.items():
        assert answers[p].status_code == 200, answers[p].text
        assert_same(answers[p].json(), completion)
    assert stats["requests"] == len(prompts) and stats["backend_exceptions"] >= 2
    # bisection: at most 2 calls per request, not a re-run of the whole batch one by one after each split
    assert len(backend.batches) <= 2 * len(prompts)


def test_a_hung_batch_is_a_504_and_health_degraded_until_it_ends(hf_backend):
    backend = Gated(hf_backend)
    with serve_in_thread(create_app(backend, window_s=0.0, request_timeout_s=2.0)) as url:
        try:
            r = post_process(url, PROMPTS[0])
            assert r.status_code == 504, r.text
            assert "request timeout of 2 s" in r.json()["error"]
            h = poll_health(url, lambda h: h["status"] == "degraded")  # once the batch has run past 2 s
            assert h["busy"] and h["batch_running_s"] > 2.0 and h["request_timeout_s"] == 2.0
            queued = post_process(url, PROMPTS[1])  # waits behind the hung batch, then leaves the queue
            assert queued.status_code == 504, queued.text
            t = httpx.post(f"{url}/tokenize", json={"text": "hi"}, timeout=120)  # behind the hung batch, on its thread
            assert t.status_code == 504, t.text
            h = httpx.get(f"{url}/health").json()
            assert h["stats"]["timed_out"] == 3 and h["queued"] == 0 and h["stats"]["batches"] == 1
        finally:
            backend.gate.set()
        h = poll_health(url, lambda h: not h["busy"])
        assert h["status"] == "ok" and h["batch_running_s"] is None
        r = post_process(url, PROMPTS[2])
        assert r.status_code == 200, r.text
        assert r.json()["text"] == expected(hf_backend, PROMPTS[2], max_tokens=3, temperature=GREEDY).text


def test_a_full_queue_is_a_429_with_retry_after_and_not_queued(hf_backend):
    backend = Gated(hf_backend)
    app = create_app(backend, max_batch=1, window_s=0.0, max_queue=2, request_timeout_s=120)
    with serve_in_thread(app) as url, ThreadPoolExecutor(3) as pool:
        try:
            running = pool.submit(post_process, url, PROMPTS[0])
            assert backend.entered.wait(60)  # its batch is in the backend, held there
            waiting = [pool.submit(post_process, url, p) for p in PROMPTS[1:3]]
            poll_health(url, lambda h: h["queued"] == 2)
            r = post_process(url, PROMPTS[3])
            assert r.status_code == 429, r.text
            assert int(r.headers["Retry-After"]) >= 1 and "2 requests already queued" in r.json()["error"]
            h = httpx.get(f"{url}/health").json()
            assert h["queued"] == 2 and h["max_queue"] == 2 and h["stats"]["rejected"] == 1
        finally:
            backend.gate.set()
        answers = [running.result(), *(w.result() for w in waiting)]
        stats = httpx.get(f"{url}/health").json()["stats"]
    for prompt, a in zip(PROMPTS[:3], answers):
        assert a.status_code == 200, a.text
        assert a.json()["text"] == expected(hf_backend, prompt, max_tokens=3, temperature=GREEDY).text
    assert stats["requests"] == 3  # the refused request never reached a batch


def test_server_faults_are_5xx_and_request_faults_4xx(hf_backend):
    class NoCompletion(Wrapped):
        """Answers every request with neither a completion nor an error: the server's fault."""

        def generate(self, batch):
            return [replace(r, completions=()) for r in self.inner.generate(batch)]

    with serve_in_thread(create_app(NoCompletion(hf_backend), window_s=0.0)) as url:
        r = post_process(url, PROMPTS[0])
        assert r.status_code == 500 and "no completion" in r.json()["error"]
        # an error the backend reports for the request (request_problem: too long for the window) is the client's
        r = httpx.post(f"{url}/process", json={"prompt": "the answer is", "max_new_tokens": 5000}, timeout=120)
        assert r.status_code == 400 and "exceeds max_sequence_length" in r.json()["error"]


@pytest.mark.parametrize(("kw", "option"), [({"max_queue": 0}, "--max-queue"), ({"request_timeout_s": 0}, "--request-timeout"),
                                            ({"request_timeout_s": float("inf")}, "--request-timeout")])
def test_bad_pressure_options_are_refused(hf_backend, kw, option):
    with pytest.raises(EffbenchError, match=option):
        create_app(hf_backend, **kw)


def test_max_batch_above_the_submission_limit_is_refused(hf_backend):
    with pytest.raises(EffbenchError, match="max_batch_size"):
        create_app(hf_backend, max_batch=9)


# ---- bad input -----------------------------------------------------------------------------------
BAD_PROCESS = [
    pytest.param({"max_new_tokens": 5}, 422, "prompt", id="no-prompt"),
    pytest.param({"prompt": 123}, 422, "prompt", id="prompt-not-a-string"),
    pytest.param({"prompt": "hi", "max_new_tokens": "many"}, 422, "max_new_tokens", id="max-new-tokens-not-an-int"),
    pytest.param({"prompt": "hi", "max_new_tokens": -1}, 422, "max_new_tokens", id="negative-max-new-tokens"),
    pytest.param({"prompt": "hi", "num_samples": 0}, 422, "num_samples", id="zero-num-samples"),
    pytest.param({"prompt": "hi", "num_return_sequences": -2}, 422, "num_return_sequences", id="negative-num-return-sequences"),
    pytest.param({"prompt": "hi", "num_samples": 2, "num_return_sequences": 3}, 422, "disagree", id="counts-disagree"),
    pytest.param({"prompt": "hi", "temperature": -0.5}, 422, "temperature", id="negative-temperature"),
    pytest.param({"prompt": "hi", "top_p": 0}, 422, "top_p", id="zero-top-p"),
    pytest.param({"prompt": "hi", "top_k_per_token": 0}, 422, "top_k_per_token", id="zero-top-k-per-token"),
    pytest.param({"prompt": "hi", "top_k_per_token": 1000}, 400, "top_k_per_token", id="top-k-per-token-too-many"),
    pytest.param({"prompt": "hi", "stop_sequences": "\n"}, 422, "stop_sequences", id="stop-sequences-not-a-list"),
    pytest.param({"prompt": "hi", "seed": -1}, 422, "seed", id="negative-seed"),
    pytest.param(["prompt", "hi"], 422, "", id="body-not-an-object"),
    pytest.param({"prompt": "budget " * 3000, "max_new_tokens": 4}, 400, "max_sequence_length", id="prompt-too-long"),
    pytest.param({"prompt": "the answer is", "max_new_tokens": 5000}, 400, "max_sequence_length", id="window-exceeded-by-max-new-tokens"),
]


@pytest.mark.parametrize(("body", "status", "word"), BAD_PROCESS)
def test_bad_process_requests_get_4xx_and_the_server_keeps_serving(client, body, status, word):
    r = client.post("/process", json=body)
    assert r.status_code == status, r.text
    message = r.json()["error"]
    assert isinstance(message, str) and message and word in message
    still_serving(client)


def test_too_long_prompt_message_gives_the_token_counts(client, hf_backend):
    prompt = "budget " * 3000
    r = client.post("/process", json={"prompt": prompt, "max_new_tokens": 4, "temperature": GREEDY})
    assert r.status_code == 400
    n = len(hf_backend.tokenizer.encode(prompt, add_special_tokens=True))
    assert r.json()["error"] == f"prompt of {n} tokens + max_tokens 4 exceeds max_sequence_length 2048"


@pytest.mark.parametrize("path", ["/process", "/tokenize", "/decode"])
def test_malformed_json_is_a_422(client, path):
    r = client.post(path, content=b'{"prompt": "hi", ', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "JSON" in r.json()["error"]
    still_serving(client)


def test_json_without_its_content_type_is_a_422_that_says_so(client):
    r = client.post("/process", content=b'{"prompt": "hi"}', headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 422 and "Content-Type: application/json" in r.json()["error"]
    still_serving(client)


def test_bad_tokenize_and_decode_requests(client):
    for path, body in [("/tokenize", {"text": 5}), ("/tokenize", {"text": "hi", "max_length": 0}),
                       ("/decode", {"tokens": "1 2 3"}), ("/decode", {"tokens": [1, "x"]})]:
        r = client.post(path, json=body)
        assert r.status_code == 422, (path, body, r.text)
        assert r.json()["error"]
    for ids in ([-1], [2**40]):
        r = client.post("/decode", json={"tokens": ids})
        assert r.status_code == 400 and "token id" in r.json()["error"]
    still_serving(client)


def test_decode_refuses_ids_past_the_tokenizer(client, hf_backend):
    vocab = len(hf_backend.tokenizer)
    assert client.get("/health").status_code == 200
    for ids in ([vocab + 5], [1, vocab], [2**40], [3, -1]):
        r = client.post("/decode", json={"tokens": ids})
        assert r.status_code == 400, (ids, r.text)
        message = r.json()["error"]
        assert message.startswith("tokens: ") and "is not a token id" in message and f"0..{vocab - 1}" in message
    r = client.post("/decode", json={"tokens": [vocab - 1]})
    assert r.status_code == 200 and r.json()["text"] == hf_backend.decode([vocab - 1])
    still_serving(client)


# JSON can carry a lone surrogate, which is no valid Unicode text and which no tokenizer encodes;
# httpx would not encode it, so these bodies are sent as bytes.
LONE_SURROGATE = [
    pytest.param(b'{"prompt": "a\\ud800b", "max_new_tokens": 3, "temperature": 1e-7}', "prompt: character 1", id="prompt"),
    pytest.param(b'{"prompt": "hi", "max_new_tokens": 3, "stop_sequences": ["ok", "\\udfff"]}', "stop_sequences[1]: character 0", id="stop-sequence"),
]


@pytest.mark.parametrize(("bad_body", "where"), LONE_SURROGATE)
def test_lone_surrogate_is_a_400_for_its_request_only(hf_backend, bad_body, where):
    # A window of 0.5 s, so that the two requests would usually share a batch; the checks below
    # hold however they are timed: the bad one is refused before it is queued.
    with serve_in_thread(create_app(hf_backend, window_s=0.5)) as url:
        good_body = {"prompt": PROMPTS[0], "max_new_tokens": 3, "temperature": GREEDY}
        start = threading.Barrier(2)

        def send(body):
            with httpx.Client(base_url=url, timeout=120) as c:
                start.wait()
                if isinstance(body, bytes):
                    return c.post("/process", content=body, headers={"content-type": "application/json"})
                return c.post("/process", json=body)

        with ThreadPoolExecutor(2) as pool:
            bad, good = pool.map(send, [bad_body, good_body])
        stats = httpx.get(f"{url}/health").json()["stats"]
    assert bad.status_code == 400, bad.text
    assert bad.json()["error"].startswith(where) and "lone surrogate" in bad.json()["error"]
    assert good.status_code == 200, good.text
    assert good.json()["text"] == expected(hf_backend, PROMPTS[0], max_tokens=3, temperature=GREEDY).text
    assert stats["requests"] == 1 and stats["backend_exceptions"] == 0  # never queued, no batch re-run


def test_tokenize_refuses_a_lone_surrogate(client):
    r = client.post("/tokenize", content=b'{"text": "\\ud83d"}', headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"].startswith("text: character 0 is a lone surrogate")
    still_serving(client)


def test_huge_body_is_a_413(client, server):
    big = {"prompt": "x" * (2 << 20)}  # 2 MiB of prompt, over the 1 MiB limit
    r = client.post("/process", json=big)
    assert r.status_code == 413 and "limit" in r.json()["error"]
    still_serving(client)

    def chunks():  # no Content-Length: the limit is counted as the body streams in
        yield b'{"prompt": "'
        for _ in range(40):
            yield b"y" * 65536
        yield b'"}'

    with httpx.Client(base_url=server, timeout=120) as c:
        r = c.post("/process", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    still_serving(client)


def test_unknown_path_and_method(client):
    assert client.get("/nope").status_code == 404
    assert client.get("/process").status_code == 405
    still_serving(client)


# ---- the command ---------------------------------------------------------------------------------
def test_serve_command_explains_itself():
    res = CliRunner().invoke(cli_app, ["serve", "--help"])
    assert res.exit_code == 0
    out = " ".join(res.output.split())
    for word in ("/process", "/tokenize", "/decode", "--host", "--max-batch", "--batch-window-ms", "--one-at-a-time", "authentication",
                 "--max-queue", "--request-timeout", "429", "504"):
        assert word in out, word


def test_serve_command_errors_are_one_line(tmp_path):
    res = CliRunner().invoke(cli_app, ["serve", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "error:" in res.output

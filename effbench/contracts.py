"""The contracts between effbench's parts: requests, results, timings and the Backend protocol.

Everything else imports from here; nothing here imports a heavy library. Outcomes are data:
a failed request is a GenerationResult with `error` set, not an exception: a run keeps
every answer it got.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, Sequence, runtime_checkable

# HELM's HTTP client sends temperature 1e-7 for "greedy"; anything at or below this is argmax.
GREEDY_TEMPERATURE = 1e-4


# The choices of `effbench run` (typer checks them on the command line, run_config.json keeps them).
Order = Literal["effbench", "helm"]  # see effbench/execute/order.py
Semantics = Literal["item", "helm"]  # see score_runs in effbench/score.py
MissingData = Literal["auto", "skip", "stop"]  # see data_problem in effbench/plan.py
BackendName = Literal["hf", "vllm"]  # what --backend may choose instead of the manifest's


class EffbenchError(Exception):
    """A user-facing error: its message is one line that names the file and field at fault."""


# The id of the request the backend worker sends once, before any timed batch, to warm the model up
# (one-off kernel and allocator set-up); backends that count batches skip it.
WARM_UP_ID = "warm-up"


@dataclass(frozen=True)
class Origin:
    """Where a request came from: suite, HELM run name, instance id (and perturbation, trial)."""

    suite: str = ""
    run: str = ""
    instance: str = ""
    index: int = 0  # position of the request state within its run


@dataclass(frozen=True)
class GenerationRequest:
    id: str
    prompt: str
    max_tokens: int = 100
    stop_sequences: tuple[str, ...] = ()
    temperature: float = 0.0
    top_p: float = 1.0
    num_completions: int = 1
    top_k_per_token: int = 1
    echo_prompt: bool = False
    seed: int | None = None
    origin: Origin = field(default_factory=Origin)
    # The prompt's token ids (special tokens included), made once by the plan with the submission's
    # tokenizer (effbench/plan.py prompt_shapes): the lengths the scheduler batches by are the ones
    # the backend runs. None: the backend encodes the prompt itself. Backends whose tokenizer may
    # differ ignore them (backends/common.py plan_ids_apply); not part of the request's identity.
    prompt_token_ids: tuple[int, ...] | None = field(default=None, compare=False, repr=False)

    @property
    def greedy(self) -> bool:
        return self.temperature <= GREEDY_TEMPERATURE


@dataclass(frozen=True)
class TokenLogprob:
    text: str
    logprob: float
    top_logprobs: tuple[tuple[str, float], ...] = ()  # best first; texts may repeat (byte pieces)
    token_id: int | None = None


@dataclass(frozen=True)
class Completion:
    text: str
    tokens: tuple[TokenLogprob, ...]
    finish_reason: str  # "stop" (stop sequence), "eos", "length"

    @property
    def logprob(self) -> float:
        return sum(t.logprob for t in self.tokens)


@dataclass(frozen=True)
class Timings:
    """Wall-clock seconds (time.time()) of one request's life; None where unknown."""

    queued: float
    started: float | None = None
    first_token: float | None = None
    finished: float | None = None

    @property
    def latency(self) -> float | None:
        return None if self.finished is None or self.started is None else self.finished - self.started


@dataclass(frozen=True)
class GenerationResult:
    request_id: str
    completions: tuple[Completion, ...]
    prompt_tokens: int
    output_tokens: int  # summed over completions, after stop-sequence cutting
    timings: Timings
    batch_id: int = -1
    batch_size: int = 1
    computed_tokens: int = 0  # tokens the backend actually ran through the model for this request
    error: str | None = None
    # prompt tokens served from a shared prefix's KV cache instead (computed once for its group:
    # the request that computed it counts them as its own): computed = prompt - cached + generated
    cached_tokens: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class BackendCapabilities:
    max_batch_size: int
    max_sequence_length: int
    logprobs: bool = True
    top_logprobs: int = 20
    echo: bool = True
    # token ids are 0..vocab_size-1 (len(tokenizer), added tokens included); None: unknown (a
    # remote server, or before start()): callers then leave the check to the backend
    vocab_size: int | None = None


@runtime_checkable
class Backend(Protocol):
    """A model server with an explicit lifecycle: start() once, generate() many times, close()."""

    name: str

    @property
    def capabilities(self) -> BackendCapabilities: ...

    def start(self) -> None: ...

    def generate(self, batch: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Run one batch; returns one result per request, in order. Never raises for a bad request."""
        ...

    def tokenize(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def close(self) -> None: ...

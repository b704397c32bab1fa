"""What a manifest's `[backend_args]` may hold: one pydantic model per backend, checked when the
manifest is read (effbench/submission.py), before any planning or loading, so a misspelt key or
a value of the wrong type is one line naming the manifest and the field, not a failure after the
plan. Strict types: TOML's `true` is not a number and `"no"` is not a boolean. The backends take
these models' fields as their keyword arguments and read their defaults from here, as does
`effbench check` (effbench/predict/check.py). Light on purpose: no backend library is imported.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class BackendOptions(BaseModel):
    """What every backend's options share: no unknown key, no coercion, read-only once read."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    # how an unknown key is refused: "backend_args.<key>: not <KIND>; allowed: ..."
    KIND: ClassVar[str] = "an option of this backend"


class HFOptions(BackendOptions):
    """effbench/backends/hf.py; README, "Backends" (shared-prefix KV reuse, prefill chunks)."""

    KIND: ClassVar[str] = "an option of the hf backend"
    prefix_reuse: bool = Field(True, description="run a batch's shared prompt prefix once (false: every prompt whole)")
    prefix_cache_bytes: int | None = Field(
        None, ge=0, description="bytes of prefix KV kept across batches; none: a share of the memory free once"
        " the model is loaded, resolved at start; 0: a batch's prefix is shared by its rows only")
    prefill_chunk_tokens: int | None = Field(
        None, ge=0, description="tokens per prefill forward pass; none: 512 on a CPU, the whole batch on a GPU;"
        " 0: the whole batch at once")
    cascade_decode: bool | None = Field(
        None, description="decode steps read a batch's shared prefix KV once for all rows (hf_cascade.py);"
        " none: on a CPU (measured there), off on a GPU")


class VLLMOptions(BackendOptions):
    """effbench/backends/vllm.py: `lora_mode`, then the engine arguments a manifest may set, scalar
    tuning knobs that load nothing and listen nowhere. Everything else (a path, a class to import,
    a second model, a network address) is effbench's or the command line's to choose
    (submission.FORBIDDEN_BACKEND_ARGS says why for the dangerous ones). None: effbench's choice
    (vllm.py) or vLLM's default; vLLM checks the values of its own enumerations."""

    KIND: ClassVar[str] = "an engine argument a manifest may set (vllm)"
    lora_mode: Literal["merged", "adapter"] = Field(
        "merged", description="merged: the merged weights; adapter: the base with the adapter through a LoRARequest")
    enforce_eager: bool | None = None
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    kv_cache_memory_bytes: int | None = Field(None, ge=0)
    max_num_batched_tokens: int | None = Field(None, ge=1)
    max_num_seqs: int | None = Field(None, ge=1)
    max_model_len: int | None = Field(None, ge=1)
    block_size: int | None = Field(None, ge=1)
    enable_prefix_caching: bool | None = None
    enable_chunked_prefill: bool | None = None
    kv_cache_dtype: str | None = None
    cpu_offload_gb: float | None = Field(None, ge=0)
    tensor_parallel_size: int | None = Field(None, ge=1)
    max_logprobs: int | None = None
    disable_log_stats: bool | None = None
    quantization: str | None = None
    seed: int | None = None
    cudagraph_capture_sizes: list[int] | None = None
    max_cudagraph_capture_size: int | None = Field(None, ge=0)
    num_gpu_blocks_override: int | None = Field(None, ge=1)
    prefix_caching_hash_algo: str | None = None
    disable_sliding_window: bool | None = None
    disable_cascade_attn: bool | None = None
    attention_backend: str | None = None
    async_scheduling: bool | None = None
    scheduling_policy: str | None = None
    optimization_level: int | None = Field(None, ge=0)
    performance_mode: str | None = None
    swap_space: float | None = Field(None, ge=0)

    def engine_args(self) -> dict:
        """The engine arguments the manifest set, for vllm.LLM (the rest stay effbench's or vLLM's)."""
        return self.model_dump(exclude_none=True, exclude={"lora_mode"})


class HTTPOptions(BackendOptions):
    """effbench/backends/http.py: how long a request may take, how often a failed one is retried."""

    KIND: ClassVar[str] = "an option of the http backend"
    timeout_s: float = Field(3000.0, gt=0, description="seconds one POST may take")
    retries: int = Field(2, ge=0, description="retries of a connection failure, a 5xx or a 429")
    concurrency: int | None = Field(None, ge=1, description="POSTs at once; none: limits.max_batch_size")


class FaultOptions(HFOptions):
    """effbench/backends/fault.py (tests only): the HF options plus where and how it fails."""

    KIND: ClassVar[str] = "an option of the fault backend"
    delay_s: float = Field(0.0, ge=0, description="sleep before every batch")
    batch_s: float | None = Field(None, ge=0, description="every batch takes exactly this long (compute, then sleep)")
    hang_on_batch: int | None = Field(None, description="this batch never returns")
    crash_on_batch: int | None = Field(None, description="the process exits (code 13) on receiving this batch")
    raise_on_batch: int | None = Field(None, description="this batch raises")
    die_between_batches_after: int | None = Field(None, description="answers this batch, then exits before the next")
    wrong_count_on_batch: int | None = Field(None, description="this batch is answered with one result too few")
    raise_on_request: str | None = Field(None, description="a batch holding a request whose id ends with this raises")
    broken_from_batch: int | None = Field(None, description="from this batch on, every batch of the process raises")
    fail_starts: list[int] = Field(default_factory=list, description="these starts (over all processes, 1 = the first) raise")
    slow_stats_s: float = Field(0.0, ge=0, description="the allocator stats answer after this long")
    child_process: bool = Field(False, description="start() starts a process of its own that runs until close()")
    once: bool = Field(False, description="each fault fires in one process only (needs state_dir)")
    state_dir: str | None = Field(None, description="a folder the worker processes of one test share")

    @model_validator(mode="after")
    def _shared_state(self) -> FaultOptions:
        if (self.once or self.fail_starts) and self.state_dir is None:
            raise ValueError("backend_args.state_dir: once and fail_starts need it (a folder the worker processes share)")
        return self

"""What a manifest's `[backend_args]` may hold per backend, checked when the manifest is read
(before anything loads). Light on purpose: no backend library is imported here."""

from __future__ import annotations

# The engine arguments a manifest may set: scalar tuning knobs that load nothing and listen nowhere.
# Everything else (a path, a class to import, a second model, a network address) is effbench's or
# the command line's to choose; submission.FORBIDDEN_BACKEND_ARGS says why for the dangerous ones.
MANIFEST_ENGINE_ARGS = frozenset({
    "lora_mode", "enforce_eager", "gpu_memory_utilization", "kv_cache_memory_bytes", "max_num_batched_tokens",
    "max_num_seqs", "max_model_len", "block_size", "enable_prefix_caching", "enable_chunked_prefill", "kv_cache_dtype",
    "cpu_offload_gb", "tensor_parallel_size", "max_logprobs", "disable_log_stats", "quantization", "seed",
    "cudagraph_capture_sizes", "max_cudagraph_capture_size", "num_gpu_blocks_override", "prefix_caching_hash_algo",
    "disable_sliding_window", "disable_cascade_attn", "attention_backend", "async_scheduling", "scheduling_policy",
    "optimization_level", "performance_mode", "swap_space",
})


def check_engine_args(args: dict) -> None:
    """Raise ValueError (the manifest's validator turns it into one line) for an engine argument a
    manifest may not set, or a value that is not a plain scalar (a list of sizes is one)."""
    for key, value in args.items():
        if key not in MANIFEST_ENGINE_ARGS:
            raise ValueError(f"backend_args.{key}: not an engine argument a manifest may set (vllm); allowed:"
                             f" {', '.join(sorted(MANIFEST_ENGINE_ARGS))}")
        scalar = (bool, int, float, str)
        if not (isinstance(value, scalar) or (isinstance(value, list) and all(isinstance(v, int) for v in value))):
            raise ValueError(f"backend_args.{key}: {value!r} is not a plain value")

"""Merge a LoRA adapter into its base once, and keep the merged weights in a content-keyed cache.

Serving merged weights costs nothing per token (no LoRA matmuls) and gives every backend (HF,
vLLM) the same plain model folder. The key hashes the adapter's bytes, a fingerprint of the base
(names, sizes and the first and last MiB of each file: hashing 14 GB per run would cost minutes)
and the dtype, so a changed adapter or base never serves stale weights.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from effbench.paths import default_cache_dir
from effbench.submission import Submission

MERGE_FORMAT = "effbench-merge-v1"
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
)


def _file_fingerprint(h: "hashlib._Hash", path: Path, full: bool) -> None:
    size = path.stat().st_size
    h.update(f"{path.name}\0{size}\0".encode())
    with path.open("rb") as f:
        if full or size <= 2 << 20:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        else:
            h.update(f.read(1 << 20))
            f.seek(size - (1 << 20))
            h.update(f.read(1 << 20))


def merge_key(sub: Submission, dtype: str) -> str:
    h = hashlib.sha256(f"{MERGE_FORMAT}\0{dtype}\0".encode())
    for folder, full in ((sub.base_dir, False), (sub.adapter_dir, True), (sub.tokenizer_dir, True)):
        h.update(b"\1")
        for p in sorted(folder.iterdir()):
            if p.is_file():
                _file_fingerprint(h, p, full)
    return h.hexdigest()[:20]


def merged_model_dir(sub: Submission, dtype: str, cache_dir: Path | None = None) -> tuple[Path, bool]:
    """The folder to serve: the base itself when there is no adapter, else the cached merge.

    Returns (folder, built_now). The merge is done in float32 and saved in `dtype`, as safetensors,
    with the tokenizer copied beside it; it is written to a temporary folder and renamed, so a
    crash never leaves a half-written cache entry.
    """
    if sub.base_dir is None:
        raise ValueError("merged_model_dir() needs a local base: call Submission.fetch_hub_base() first")
    if sub.adapter_dir is None:
        return sub.base_dir, False
    cache_dir = cache_dir or default_cache_dir()
    target = cache_dir / "merged" / f"{sub.name}-{merge_key(sub, dtype)}"
    if (target / "config.json").is_file():
        return target, False

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    target.parent.mkdir(parents=True, exist_ok=True)
    base = AutoModelForCausalLM.from_pretrained(
        str(sub.base_dir),
        dtype=torch.float32,
        trust_remote_code=sub.trust_remote_code,
        use_safetensors=not sub.allow_pickle,
        local_files_only=True,
    )
    merged = PeftModel.from_pretrained(base, str(sub.adapter_dir)).merge_and_unload()
    merged = merged.to(getattr(torch, dtype))
    tmp = Path(tempfile.mkdtemp(prefix=".merge-", dir=target.parent))
    try:
        merged.save_pretrained(tmp, safe_serialization=True)
        for name in _TOKENIZER_FILES:
            if (sub.tokenizer_dir / name).is_file():
                shutil.copy2(sub.tokenizer_dir / name, tmp / name)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target, True

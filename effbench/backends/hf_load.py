"""Loading for the HF backend (effbench/backends/hf.py), kept out of its hot path: the device,
the tokenizer and the model from the merged folder with the submission's trust flags (no remote
code unless trusted, safetensors only unless pickles are allowed), the manifest's dtype and
quantization, the EOS ids, and the memory free once loaded (the prefix cache's default bound).

The one place the backend imports torch and transformers: without the 'hf' extra, importing the
backend is one clear error, not a traceback.
"""

from __future__ import annotations

from pathlib import Path

from effbench.contracts import EffbenchError
from effbench.submission import Manifest, Submission

try:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
except ImportError as e:  # pragma: no cover - exercised only on an install without the extra
    raise EffbenchError(f"the hf backend needs the 'hf' extra: pip install -c constraints.txt 'effbench[hf]' ({e})") from None


def pick_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_tokenizer(submission: Submission, model_dir: Path):
    """The folder's tokenizer, padding on the left (the decode loop's batches are left-padded)."""
    tokenizer = AutoTokenizer.from_pretrained(
        str(model_dir), trust_remote_code=submission.trust_remote_code, local_files_only=True
    )
    tokenizer.padding_side = "left"
    return tokenizer


def load_model(submission: Submission, model_dir: Path, device: str, m: Manifest):
    """The folder's model in eval mode on `device`, at the dtype of the manifest `m`, quantized as
    it says (bitsandbytes places a quantized model itself); the trust flags are `submission`'s."""
    kwargs = dict(
        dtype=getattr(torch, m.dtype),
        trust_remote_code=submission.trust_remote_code,
        use_safetensors=not submission.allow_pickle,
        local_files_only=True,
    )
    if m.quantization != "none":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = (
            BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=getattr(torch, m.dtype), bnb_4bit_quant_type="nf4")
            if m.quantization == "bnb-4bit"
            else BitsAndBytesConfig(load_in_8bit=True)
        )
        kwargs["device_map"] = device
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs).eval()
    if m.quantization == "none":
        model.to(device)
    return model


def eos_ids(model, tokenizer) -> set[int]:
    """The token ids that end a row: the model's generation config's, else the tokenizer's."""
    ids = model.generation_config.eos_token_id if model.generation_config is not None else None
    if ids is None:
        ids = tokenizer.eos_token_id
    if ids is None:
        return set()
    return set(ids) if isinstance(ids, (list, tuple)) else {ids}


def free_bytes(device: str) -> int:
    """Memory free now on `device`: the GPU's (CUDA's own count), or the host's available RAM."""
    if device.startswith("cuda"):
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    import psutil

    return int(psutil.virtual_memory().available)

"""What a submission's model folders hold, read without loading any model: safetensors headers,
JSON configs, tokenizer files, LoRA tensors against the base's weights, config.json against them.

Every check reads JSON or a safetensors header (never a pickle, never the submission's code) and
turns a broken file into one EffbenchError line naming the file and the manifest field, so a
mistake costs a second before any model load instead of a traceback after it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from pathlib import Path

from effbench.contracts import EffbenchError
from effbench.paths import default_cache_dir

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
# Configs a loader reads whose `auto_map` makes transformers import the folder's own .py files.
CODE_CONFIGS = ("config.json", "tokenizer_config.json", "adapter_config.json", "processor_config.json",
                "preprocessor_config.json")
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
                "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}
_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(.*)\.lora_([AB])(?:\.[^.]+)?\.weight$")


def safetensors_header(path: Path, field: str) -> dict[str, list[int]]:
    """Tensor name -> shape from a safetensors file's JSON header, after checking that the file
    holds every byte the header promises (a copy cut short fails here, not mid-load).
    `field` is the manifest field the file belongs to, for the error message."""
    bad = f"(manifest field '{field}')"
    size = path.stat().st_size
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise EffbenchError(f"{path}: not a safetensors file (truncated header) {bad}")
        (n,) = struct.unpack("<Q", raw)
        if n > 100_000_000:
            raise EffbenchError(f"{path}: not a safetensors file (header length {n}) {bad}")
        body = f.read(n)
    if len(body) != n:
        raise EffbenchError(f"{path}: not a safetensors file (header cut short: {len(body)} of {n} bytes) {bad}")
    try:
        header = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise EffbenchError(f"{path}: not a safetensors file (header is not JSON) {bad}") from None
    if not isinstance(header, dict):
        raise EffbenchError(f"{path}: not a safetensors file (header is not a JSON object) {bad}")
    header.pop("__metadata__", None)
    data_bytes = size - 8 - n
    shapes = {}
    for name, info in header.items():
        shape = info.get("shape") if isinstance(info, dict) else None
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise EffbenchError(f"{path}: not a safetensors file (tensor '{name}' has no shape) {bad}")
        offsets = info.get("data_offsets")
        if offsets is not None:
            if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
                    and 0 <= offsets[0] <= offsets[1]):
                raise EffbenchError(f"{path}: not a safetensors file (tensor '{name}' has data_offsets {offsets!r}) {bad}")
            if offsets[1] > data_bytes:
                raise EffbenchError(f"{path}: data cut short: tensor '{name}' ends at byte {offsets[1]} of the data,"
                                    f" the file holds {max(data_bytes, 0)} (an incomplete copy?) {bad}")
            item = _DTYPE_BYTES.get(str(info.get("dtype")))
            if item is not None and offsets[1] - offsets[0] != math.prod(shape) * item:
                raise EffbenchError(f"{path}: tensor '{name}' of shape {shape} ({info.get('dtype')}) has"
                                    f" {offsets[1] - offsets[0]} bytes of data, not {math.prod(shape) * item} {bad}")
        shapes[name] = shape
    return shapes


def weight_files(folder: Path, field: str, manifest: Path, allow_pickle: bool) -> list[Path]:
    safe = sorted(folder.glob("*.safetensors"))
    if safe:
        return safe
    pickles = sorted(p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles and not allow_pickle:
        raise EffbenchError(
            f"{manifest}: field '{field}': weights in {folder} are only pickle files ({pickles[0].name});"
            " convert them to safetensors, or pass --allow-pickle if you trust this submission"
        )
    if pickles:
        return pickles
    raise EffbenchError(f"{manifest}: field '{field}': no weights (*.safetensors) in {folder}")


def read_json(path: Path, manifest: Path, field: str) -> dict:
    if not path.is_file():
        raise EffbenchError(f"{manifest}: field '{field}': {path} is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EffbenchError(f"{path}: not valid JSON ({e}) (manifest field '{field}')") from None
    if not isinstance(data, dict):
        raise EffbenchError(f"{path}: expected a JSON object, got {type(data).__name__} (manifest field '{field}')")
    return data


def refuse_remote_code(folder: Path, manifest: Path, field: str) -> None:
    """Without --trust-remote-code nothing in `folder` may make a loader run the submission's own
    code: no `auto_map` in any config a loader reads, and no Python file at all."""
    for name in CODE_CONFIGS:
        if (folder / name).is_file() and read_json(folder / name, manifest, field).get("auto_map"):
            raise EffbenchError(f"{folder / name}: field 'auto_map': the model needs its own code;"
                                f" pass --trust-remote-code only if you trust this submission (manifest field '{field}')")
    code = sorted(folder.glob("*.py"))
    if code:
        raise EffbenchError(f"{code[0]}: a Python file in the model folder (manifest field '{field}'): submissions run"
                            " no code of their own; remove it, or pass --trust-remote-code if you trust this submission")


def check_tokenizer_file(folder: Path, field: str) -> None:
    """tokenizer.json must parse as a tokenizer (the Rust library reads it: no code runs)."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        return
    try:
        from tokenizers import Tokenizer
    except ImportError:  # no hf extra (an http submission's tools): JSON syntax is what can be checked
        read_json(path, path, field)
        return
    try:
        Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust side raises plain Exception with serde's message
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise EffbenchError(f"{path}: not a valid tokenizer ({first}) (manifest field '{field}')") from None


def check_adapter(adapter_dir: Path, mpath: Path, base_shapes: dict[str, list[int]] | None, allow_pickle: bool) -> None:
    """A LoRA adapter must change something: LoRA tensors, each a matrix on an existing base weight
    with matching in/out features, and target modules that the base has."""
    cfg_path = adapter_dir / "adapter_config.json"
    cfg = read_json(cfg_path, mpath, "adapter")
    if str(cfg.get("peft_type", "")).upper() != "LORA":
        raise EffbenchError(f"{cfg_path}: field 'peft_type': {cfg.get('peft_type')!r} is not LORA (manifest field 'adapter')")
    weights = weight_files(adapter_dir, "adapter", mpath, allow_pickle)
    if weights[0].suffix != ".safetensors":
        return  # pickle adapter (--allow-pickle): shapes are checked when loaded
    lora = 0
    for w in weights:
        for key, shape in safetensors_header(w, "adapter").items():
            m = _LORA_KEY.match(key)
            if not m:
                continue
            lora += 1
            if len(shape) != 2:
                raise EffbenchError(f"{w}: LoRA tensor '{key}' has shape {shape}; a LoRA matrix has 2 dimensions"
                                    " (manifest field 'adapter')")
            if base_shapes is None:
                continue  # hub base: checked when loaded
            module, ab = m.group(1), m.group(2)
            base_key = f"{module}.weight"
            if base_key not in base_shapes:
                raise EffbenchError(
                    f"{w}: LoRA tensor '{key}' targets '{base_key}', which the base model does not have"
                    " (manifest field 'adapter': adapter does not match base)"
                )
            out_f, in_f = base_shapes[base_key][0], base_shapes[base_key][-1]
            ok = shape[-1] == in_f if ab == "A" else shape[0] == out_f
            if not ok:
                raise EffbenchError(
                    f"{w}: LoRA tensor '{key}' has shape {shape} but base weight '{base_key}' is"
                    f" {base_shapes[base_key]} (manifest field 'adapter': adapter does not match base)"
                )
    if lora == 0:
        raise EffbenchError(f"{weights[0]}: no LoRA tensors (*.lora_A.weight / *.lora_B.weight): the adapter would"
                            " change nothing and the bare base would be scored (manifest field 'adapter')")
    if base_shapes is not None:
        _check_target_modules(cfg, cfg_path, base_shapes)


def _check_target_modules(cfg: dict, cfg_path: Path, base_shapes: dict[str, list[int]]) -> None:
    targets = cfg.get("target_modules")
    if targets is None or targets == "all-linear":
        return
    modules = {k[: -len(".weight")] for k in base_shapes if k.endswith(".weight")}
    if isinstance(targets, str):  # peft: a regex matched against the whole module name
        try:
            hit = any(re.fullmatch(targets, m) for m in modules)
        except re.error as e:
            raise EffbenchError(f"{cfg_path}: field 'target_modules': {targets!r} is not a regex ({e}) (manifest field 'adapter')") from None
    elif isinstance(targets, list) and all(isinstance(t, str) for t in targets):
        hit = any(m == t or m.endswith("." + t) for m in modules for t in targets)
    else:
        raise EffbenchError(f"{cfg_path}: field 'target_modules': {targets!r} is not a list of names or a regex"
                            " (manifest field 'adapter')")
    if not hit:
        raise EffbenchError(f"{cfg_path}: field 'target_modules': {targets!r} matches no module of the base model"
                            " (manifest field 'adapter': adapter does not match base)")


def check_config_matches_weights(config_path: Path, config: dict, shapes: dict[str, list[int]], field: str) -> None:
    """config.json must describe the weights beside it: the architecture it names, built on
    torch's meta device (no memory, no data, transformers' own code only), must have exactly
    the weight names and shapes the safetensors headers list, but for tied weights."""
    if config.get("quantization_config") or not config.get("model_type"):
        return  # pre-quantized checkpoints store packed shapes; no model_type: transformers decides at load
    passed = _passed_marker(config, shapes)
    if passed.is_file():
        return
    _build_and_compare(config_path, config, shapes, field)
    passed.parent.mkdir(parents=True, exist_ok=True)
    passed.touch()


def _passed_marker(config: dict, shapes: dict[str, list[int]]) -> Path:
    """A file that exists once this config and these weight shapes passed under the installed
    transformers: importing transformers' model code for the check costs ~4 s of every run's
    start on a CPU, for an answer that only changes with the inputs or transformers."""
    from importlib.metadata import version

    key = json.dumps([config, shapes, version("transformers"), version("torch")], sort_keys=True)
    return default_cache_dir() / "checked-configs" / hashlib.sha256(key.encode()).hexdigest()[:32]


def _build_and_compare(config_path: Path, config: dict, shapes: dict[str, list[int]], field: str) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    bad = f"(manifest field '{field}')"
    try:
        cfg = AutoConfig.for_model(**config)
    except (ValueError, KeyError, TypeError) as e:
        raise EffbenchError(f"{config_path}: field 'model_type': transformers cannot read this config ({e}) {bad}") from None
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(cfg)
    except (ValueError, TypeError, AttributeError, KeyError) as e:
        raise EffbenchError(f"{config_path}: transformers cannot build this model ({type(e).__name__}: {e}) {bad}") from None
    expected = {k: list(v.shape) for k, v in model.state_dict().items()}
    prefix = getattr(model, "base_model_prefix", "") + "."
    if prefix != "." and not any(k.startswith(prefix) for k in shapes) and any(k.startswith(prefix) for k in expected):
        shapes = {prefix + k: v for k, v in shapes.items()}  # weights saved from the bare base model
    tied = _tied_keys(model)
    # Under half the names in common: a naming scheme transformers converts while loading (legacy
    # checkpoints), not missing weights; the shapes of the names in common are still checked.
    same_names = sum(k in shapes for k in expected) >= len(expected) / 2
    for key, shape in expected.items():
        got = shapes.get(key)
        if got is None and key not in tied and same_names:
            raise EffbenchError(f"{config_path}: the config's model has weight '{key}' {shape}, which the safetensors"
                                f" files do not hold (config.json does not match the weights) {bad}")
        if got is not None and got != shape:
            raise EffbenchError(f"{config_path}: weight '{key}' is {got} in the safetensors files but {shape} under this"
                                f" config (config.json does not match the weights) {bad}")


def _tied_keys(model) -> set[str]:
    """State-dict keys that share another weight's storage (lm_head tied to the embeddings)."""
    seen: dict[int, str] = {}
    tied = set()
    for key, t in model.state_dict(keep_vars=True).items():
        ident = id(t)
        if ident in seen:
            tied.add(key)
        else:
            seen[ident] = key
    return tied

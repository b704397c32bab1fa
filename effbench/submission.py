"""A submission folder: `effbench.toml` + base model + optional LoRA adapter, validated before any load.

Submissions are untrusted code and weights. Validation reads only JSON configs and safetensors
headers (never a pickle, never remote code), and every mistake is one EffbenchError line that
names the file and the manifest field.
"""

from __future__ import annotations

import json
import re
import struct
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from effbench.contracts import EffbenchError

MANIFEST_NAME = "effbench.toml"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_batch_size: int = Field(8, ge=1, le=4096)
    max_sequence_length: int = Field(2048, ge=16)


class Manifest(BaseModel):
    """The `effbench.toml` of a submission. Paths are relative to the manifest's folder."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][\w.-]*$", max_length=100)
    base: str | None = Field(None, min_length=1, description="local folder, or a hub id (org/name) when online")
    adapter: str | None = Field(None, description="LoRA adapter folder (peft format)")
    tokenizer: str | None = Field(None, description="tokenizer folder; default: the base folder")
    backend: str = "hf"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    quantization: Literal["none", "bnb-4bit", "bnb-8bit"] = "none"
    limits: Limits = Field(default_factory=Limits)
    backend_args: dict[str, Any] = Field(default_factory=dict, description="passed through to the backend")
    endpoint: str | None = Field(None, pattern=r"^https?://", description="the server's URL (backend http)")

    @model_validator(mode="after")
    def _base_unless_remote(self) -> "Manifest":
        if self.base is None and self.backend != "http":
            raise ValueError("base: required but missing (only backend = \"http\", a remote server, needs none)")
        return self

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        from effbench.backends import BACKENDS

        if v not in BACKENDS:
            raise ValueError(f"unknown backend {v!r}; one of {sorted(BACKENDS)}")
        return v


def validation_line(path: Path, err: ValidationError) -> str:
    """A pydantic error as one line naming file and field; an unknown key is reported first
    (a misspelt key usually also leaves a required one missing)."""
    errors = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    field = ".".join(str(p) for p in first["loc"]) or "(top level)"
    kind = first["type"]
    msg = str(first.get("ctx", {}).get("error", "")) if kind == "value_error" else ""
    if not first["loc"] and re.match(r"^\w+: ", msg):  # a whole-model check that names its field
        name, _, why = msg.partition(": ")
        return f"{path}: field '{name}': {why}"
    if kind == "extra_forbidden":
        return f"{path}: field '{field}': unknown key"
    if kind == "missing":
        return f"{path}: field '{field}': required but missing"
    return f"{path}: field '{field}': {first['msg']} (got {first.get('input')!r})"


def read_manifest(folder: Path) -> Manifest:
    path = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise EffbenchError(f"{folder}: submission folder does not exist")
    if not path.is_file():
        raise EffbenchError(f"{path}: manifest missing (a submission folder needs {MANIFEST_NAME})")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise EffbenchError(f"{path}: not valid TOML: {e}") from None
    try:
        return Manifest.model_validate(data)
    except ValidationError as e:
        raise EffbenchError(validation_line(path, e)) from None


def safetensors_header(path: Path, field: str) -> dict[str, list[int]]:
    """Tensor name -> shape from a safetensors file's JSON header; reads no tensor data.
    `field` is the manifest field the file belongs to, for the error message."""
    bad = f"(manifest field '{field}')"
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
    shapes = {}
    for name, info in header.items():
        shape = info.get("shape") if isinstance(info, dict) else None
        if not isinstance(shape, list) or not all(isinstance(d, int) for d in shape):
            raise EffbenchError(f"{path}: not a safetensors file (tensor '{name}' has no shape) {bad}")
        shapes[name] = shape
    return shapes


def _weights(folder: Path, field: str, manifest: Path, allow_pickle: bool) -> list[Path]:
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


def _json(path: Path, manifest: Path, field: str) -> dict:
    if not path.is_file():
        raise EffbenchError(f"{manifest}: field '{field}': {path} is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EffbenchError(f"{path}: not valid JSON ({e}) (manifest field '{field}')") from None
    if not isinstance(data, dict):
        raise EffbenchError(f"{path}: expected a JSON object, got {type(data).__name__} (manifest field '{field}')")
    return data


@dataclass(frozen=True)
class Submission:
    """A validated submission; paths are absolute. `base_dir` is None for a hub id."""

    folder: Path
    manifest: Manifest
    base_dir: Path | None
    base_id: str | None
    adapter_dir: Path | None
    tokenizer_dir: Path | None
    allow_pickle: bool = False
    trust_remote_code: bool = False

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST_NAME

    @classmethod
    def load(
        cls, folder: str | Path, *, allow_pickle: bool = False, trust_remote_code: bool = False, base_dir: Path | None = None
    ) -> Submission:
        """Validate a submission folder. `base_dir` replaces a hub-id base by its downloaded folder."""
        folder = Path(folder).resolve()
        m = read_manifest(folder)
        mpath = folder / MANIFEST_NAME

        if m.base is None:  # a remote server (backend http): no weights here to check
            return cls(folder, m, None, None, None, None, allow_pickle, trust_remote_code)
        base_id = m.base if base_dir is not None else None
        base_dir = base_dir or (folder / m.base).resolve()
        if not base_dir.is_dir():
            if HUB_ID.match(m.base) and not (folder / m.base.split("/")[0]).exists():
                base_dir, base_id = None, m.base
            else:
                raise EffbenchError(f"{mpath}: field 'base': folder {base_dir} does not exist")

        base_shapes: dict[str, list[int]] | None = None  # None: not known before loading (hub, pickle)
        if base_dir is not None:
            config = _json(base_dir / "config.json", mpath, "base")
            if config.get("auto_map") and not trust_remote_code:
                raise EffbenchError(
                    f"{base_dir / 'config.json'}: field 'auto_map': the model needs its own code;"
                    " pass --trust-remote-code only if you trust this submission (manifest field 'base')"
                )
            for w in _weights(base_dir, "base", mpath, allow_pickle):
                if w.suffix == ".safetensors":
                    base_shapes = {**(base_shapes or {}), **safetensors_header(w, "base")}

        tokenizer_dir = (folder / m.tokenizer).resolve() if m.tokenizer else base_dir
        if tokenizer_dir is not None:
            tfield = "tokenizer" if m.tokenizer else "base"
            if not tokenizer_dir.is_dir():
                raise EffbenchError(f"{mpath}: field '{tfield}': tokenizer folder {tokenizer_dir} does not exist")
            if not any((tokenizer_dir / f).is_file() for f in ("tokenizer.json", "tokenizer.model")):
                raise EffbenchError(
                    f"{mpath}: field '{tfield}': no tokenizer (tokenizer.json or tokenizer.model) in {tokenizer_dir}"
                )

        adapter_dir = None
        if m.adapter is not None:
            adapter_dir = (folder / m.adapter).resolve()
            if not adapter_dir.is_dir():
                raise EffbenchError(f"{mpath}: field 'adapter': folder {adapter_dir} does not exist")
            _check_adapter(adapter_dir, mpath, base_shapes, allow_pickle)

        return cls(folder, m, base_dir, base_id, adapter_dir, tokenizer_dir, allow_pickle, trust_remote_code)

    def with_backend(self, name: str) -> Submission:
        """The same submission served by another backend (`--backend`); its backend_args stay."""
        from dataclasses import replace

        try:
            manifest = Manifest.model_validate({**self.manifest.model_dump(), "backend": name})
        except ValidationError as e:
            raise EffbenchError(f"--backend: {e.errors()[0]['msg']}") from None
        return replace(self, manifest=manifest)

    def fetch_hub_base(self) -> Submission:
        """A hub-id base downloaded (configs, safetensors, tokenizer; pickles only with
        allow_pickle) and validated like a local folder. Needs the network: offline, one line."""
        if self.base_dir is not None or self.manifest.base is None:
            return self
        from huggingface_hub import snapshot_download

        patterns = ["*.json", "*.safetensors", "tokenizer.model", "*.txt", "*.jinja"]
        patterns += ["*.bin", "*.pt"] if self.allow_pickle else []
        try:
            path = snapshot_download(self.manifest.base, allow_patterns=patterns)
        except Exception as e:  # huggingface_hub raises many types (offline, not found, gated): all mean "cannot fetch"
            raise EffbenchError(
                f"{self.manifest_path}: field 'base': cannot fetch hub model {self.manifest.base!r}"
                f" ({type(e).__name__}); download it and set base to its folder"
            ) from e
        return Submission.load(
            self.folder, allow_pickle=self.allow_pickle, trust_remote_code=self.trust_remote_code, base_dir=Path(path)
        )


def _check_adapter(adapter_dir: Path, mpath: Path, base_shapes: dict[str, list[int]] | None, allow_pickle: bool) -> None:
    """LoRA tensors must sit on existing base weights with matching in/out features."""
    cfg_path = adapter_dir / "adapter_config.json"
    cfg = _json(cfg_path, mpath, "adapter")
    if str(cfg.get("peft_type", "")).upper() != "LORA":
        raise EffbenchError(f"{cfg_path}: field 'peft_type': {cfg.get('peft_type')!r} is not LORA (manifest field 'adapter')")
    weights = _weights(adapter_dir, "adapter", mpath, allow_pickle)
    if base_shapes is None or weights[0].suffix != ".safetensors":
        return  # hub base or pickle adapter: shapes are checked when loaded
    for w in weights:
        for key, shape in safetensors_header(w, "adapter").items():
            m = re.match(r"^(?:base_model\.model\.)?(.*)\.lora_([AB])(?:\.[^.]+)?\.weight$", key)
            if not m:
                continue
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

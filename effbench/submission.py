"""A submission folder: `effbench.toml` + base model + optional LoRA adapter, validated before any load.

Submissions are untrusted code and weights. Validation reads only JSON configs, tokenizer files
and safetensors headers (never a pickle, never remote code; effbench/model_files.py), and every
mistake is one EffbenchError line that names the file and the manifest field. What the command
line alone may allow (a manifest cannot): remote code, pickle weights, paths outside the folder.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, ValidationInfo, field_validator, model_validator

from effbench.backends.options import BackendOptions
from effbench.contracts import EffbenchError
from effbench.model_files import (
    check_adapter,
    check_config_matches_weights,
    check_tokenizer_file,
    read_json,
    refuse_remote_code,
    safetensors_header,
    weight_files,
)
from effbench.paths import inside, resolved

MANIFEST_NAME = "effbench.toml"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

# [backend_args] keys that would load code, or files from outside the submission, or reach the
# network: only effbench (from the submission's own folders) and the command line set these. Each
# backend admits only the keys of its options model (effbench/backends/options.py): for vllm, the
# scalar tuning knobs of VLLMOptions.
FORBIDDEN_BACKEND_ARGS = {
    "trust_remote_code": "remote code is allowed only by the command line's --trust-remote-code",
    "model": "the model is the submission's base (or effbench's merge of it)",
    "model_weights": "the weights are the submission's own",
    "tokenizer": "the tokenizer is the manifest's own 'tokenizer' field",
    "hf_config_path": "configs come from the submission's folders",
    "download_dir": "nothing is downloaded into other folders",
    "hf_overrides": "it can rewrite the config (auto_map: remote code)",
    "model_class_overrides": "names Python classes to import",
    "hf_token": "no hub access from a manifest",
    "revision": "hub revisions load other files",
    "code_revision": "hub revisions load other files",
    "tokenizer_revision": "hub revisions load other files",
    "chat_template": "a template file outside the submission",
    "generation_config": "a config folder outside the submission",
    "load_format": "'pt' unpickles weights, others stream from remote stores; weights load as safetensors",
    "model_loader_extra_config": "loader plug-ins load code and files",
    "worker_cls": "names a Python class to import",
    "worker_extension_cls": "names a Python class to import",
    "scheduler_cls": "names a Python class to import",
    "distributed_executor_backend": "can name a Python class to import",
    "logits_processors": "names Python classes to import",
    "reasoning_parser_plugin": "a Python file to import",
    "io_processor_plugin": "a plug-in to import",
    "compilation_config": "can name Python passes to import",
    "speculative_config": "loads a second model from anywhere",
    "kv_transfer_config": "loads connectors and reaches the network",
    "kv_events_config": "publishes over the network",
    "otlp_traces_endpoint": "sends traces over the network",
    "master_addr": "listens beyond this machine's loopback",
    "data_parallel_address": "listens beyond this machine's loopback",
    "log_config_file": "a file outside the submission",
    "allowed_local_media_path": "reads files outside the submission",
    "allowed_media_domains": "fetches from the network",
    "enable_lora": "effbench serves the manifest's adapter itself (backend_args.lora_mode)",
    "device": "the device is effbench's choice (the GPU where there is one)",
}


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
    backend_args: SerializeAsAny[BackendOptions] = Field(
        {}, validate_default=True, description="the backend's options (effbench/backends/options.py)")
    endpoint: str | None = Field(None, pattern=r"^https?://", description="the server's URL (backend http)")

    @model_validator(mode="after")
    def _base_unless_remote(self) -> "Manifest":
        if self.base is None and self.backend != "http":
            raise ValueError("base: required but missing (only backend = \"http\", a remote server, needs none)")
        return self

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        from effbench.backends import available_backends

        if v not in available_backends():
            raise ValueError(f"unknown backend {v!r}; one of {sorted(available_backends())}")
        return v

    @field_validator("backend_args", mode="before")
    @classmethod
    def _typed_backend_args(cls, args: Any, info: ValidationInfo) -> Any:
        """The chosen backend's options model, from the manifest's table: a key that loads code or
        outside files is refused with why, an unknown key with what is allowed, a wrong type by
        the model (its errors name the field under backend_args)."""
        from effbench.backends import OPTIONS

        if "backend" not in info.data:
            return BackendOptions()  # the backend's own error is the one to show
        if isinstance(args, BackendOptions):  # built in code: checked again for this backend
            args = args.model_dump(exclude_unset=True)
        if not isinstance(args, dict):
            raise ValueError(f"backend_args: a table of the backend's options, not {type(args).__name__}")
        for key in args:
            if key in FORBIDDEN_BACKEND_ARGS:
                raise ValueError(f"backend_args.{key}: not allowed in a manifest ({FORBIDDEN_BACKEND_ARGS[key]})")
        model = OPTIONS[info.data["backend"]]
        for key in args:
            if key not in model.model_fields:
                raise ValueError(f"backend_args.{key}: not {model.KIND}; allowed: {', '.join(model.model_fields)}")
        return model.model_validate(args)


def validation_line(path: Path, err: ValidationError) -> str:
    """A pydantic error as one line naming file and field; an unknown key is reported first
    (a misspelt key usually also leaves a required one missing)."""
    errors = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    field = ".".join(str(p) for p in first["loc"]) or "(top level)"
    kind = first["type"]
    msg = str(first.get("ctx", {}).get("error", "")) if kind == "value_error" else ""
    named = re.match(r"^([\w.]+): ", msg)
    if named and (not first["loc"] or named[1].startswith(field)):  # a check that names its (sub)field
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


@dataclass(frozen=True)
class Submission:
    """A validated submission; paths are absolute and resolved. `base_dir` is None for a hub id."""

    folder: Path
    manifest: Manifest
    base_dir: Path | None
    base_id: str | None
    adapter_dir: Path | None
    tokenizer_dir: Path | None
    allow_pickle: bool = False
    trust_remote_code: bool = False
    allow_outside_paths: bool = False

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST_NAME

    @classmethod
    def load(
        cls, folder: str | Path, *, allow_pickle: bool = False, trust_remote_code: bool = False,
        allow_outside_paths: bool = False, base_dir: Path | None = None,
    ) -> Submission:
        """Validate a submission folder. `base_dir` replaces a hub-id base by its downloaded folder.
        The flags are the command line's: a manifest cannot set them."""
        folder = resolved(Path(folder), "submission folder")
        m = read_manifest(folder)
        mpath = folder / MANIFEST_NAME
        flags = (allow_pickle, trust_remote_code, allow_outside_paths)

        def local(rel: str, field: str) -> Path:
            return inside(folder / rel, folder, f"{mpath}: field '{field}'", allow_outside_paths)

        if m.base is None:  # a remote server (backend http): no weights here to check
            return cls(folder, m, None, None, None, None, *flags)
        base_id = m.base if base_dir is not None else None
        if base_dir is None and HUB_ID.match(m.base) and not (folder / m.base.split("/")[0]).exists():
            base_id = m.base  # a hub id: downloaded (and validated like a folder) by fetch_hub_base
        elif base_dir is None:
            base_dir = local(m.base, "base")
            if not base_dir.is_dir():
                raise EffbenchError(f"{mpath}: field 'base': folder {base_dir} does not exist")

        base_shapes: dict[str, list[int]] | None = None  # None: not known before loading (hub, pickle)
        if base_dir is not None:
            _check_folder(base_dir, folder, mpath, "base", trust_remote_code, allow_outside_paths or base_id is not None)
            config = read_json(base_dir / "config.json", mpath, "base")
            for w in weight_files(base_dir, "base", mpath, allow_pickle):
                if w.suffix == ".safetensors":
                    base_shapes = {**(base_shapes or {}), **safetensors_header(w, "base")}
            if base_shapes is not None and not config.get("auto_map"):
                check_config_matches_weights(base_dir / "config.json", config, base_shapes, "base")

        tokenizer_dir = local(m.tokenizer, "tokenizer") if m.tokenizer else base_dir
        if tokenizer_dir is not None:
            tfield = "tokenizer" if m.tokenizer else "base"
            if not tokenizer_dir.is_dir():
                raise EffbenchError(f"{mpath}: field '{tfield}': tokenizer folder {tokenizer_dir} does not exist")
            if m.tokenizer:
                _check_folder(tokenizer_dir, folder, mpath, tfield, trust_remote_code, allow_outside_paths)
            if not any((tokenizer_dir / f).is_file() for f in ("tokenizer.json", "tokenizer.model")):
                raise EffbenchError(
                    f"{mpath}: field '{tfield}': no tokenizer (tokenizer.json or tokenizer.model) in {tokenizer_dir}"
                )
            check_tokenizer_file(tokenizer_dir, tfield)

        adapter_dir = None
        if m.adapter is not None:
            adapter_dir = local(m.adapter, "adapter")
            if not adapter_dir.is_dir():
                raise EffbenchError(f"{mpath}: field 'adapter': folder {adapter_dir} does not exist")
            _check_folder(adapter_dir, folder, mpath, "adapter", trust_remote_code, allow_outside_paths)
            check_adapter(adapter_dir, mpath, base_shapes, allow_pickle)

        return cls(folder, m, base_dir, base_id, adapter_dir, tokenizer_dir, *flags)

    def with_backend(self, name: str) -> Submission:
        """The same submission served by another backend (`--backend`); its backend_args stay."""
        args = self.manifest.backend_args.model_dump(exclude_unset=True)  # what the manifest set, not the defaults
        try:
            manifest = Manifest.model_validate({**self.manifest.model_dump(), "backend": name, "backend_args": args})
        except ValidationError as e:
            raise EffbenchError(f"--backend: {e.errors()[0]['msg']}") from None
        return replace(self, manifest=manifest)

    def fetch_hub_base(self) -> Submission:
        """A hub-id base downloaded (configs, safetensors, tokenizer; pickles only with
        allow_pickle, Python files only with trust_remote_code) and validated like a local
        folder. Needs the network: offline, one line."""
        if self.base_dir is not None or self.manifest.base is None:
            return self
        from huggingface_hub import snapshot_download

        patterns = ["*.json", "*.safetensors", "tokenizer.model", "*.txt", "*.jinja"]
        patterns += ["*.bin", "*.pt"] if self.allow_pickle else []
        patterns += ["*.py"] if self.trust_remote_code else []
        try:
            path = snapshot_download(self.manifest.base, allow_patterns=patterns)
        except Exception as e:  # huggingface_hub raises many types (offline, not found, gated): all mean "cannot fetch"
            raise EffbenchError(
                f"{self.manifest_path}: field 'base': cannot fetch hub model {self.manifest.base!r}"
                f" ({type(e).__name__}); download it and set base to its folder"
            ) from e
        return Submission.load(self.folder, allow_pickle=self.allow_pickle, trust_remote_code=self.trust_remote_code,
                               allow_outside_paths=self.allow_outside_paths, base_dir=Path(path))


def _check_folder(model_dir: Path, root: Path, mpath: Path, field: str, trust_remote_code: bool, allow_outside: bool) -> None:
    """Every file a loader may open stays inside the submission (a link out of it is refused, a
    link loop named), and nothing in the folder makes a loader run code without the flag."""
    for entry in sorted(model_dir.iterdir()):
        if entry.is_symlink() or not entry.exists():
            inside(entry, root, f"{mpath}: field '{field}': a link in {model_dir}", allow_outside)
            if not entry.exists():
                raise EffbenchError(f"{entry}: a broken link in the model folder (manifest field '{field}')")
    if not trust_remote_code:
        refuse_remote_code(model_dir, mpath, field)

"""Submission validation: every mistake in a submission folder is refused before any model load,
with one EffbenchError line that names the file and the manifest field, and the CLI turns it into
`error: ...` and exit code 2 (no traceback). Each test breaks its own copy of the demo submission."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from effbench.cli import app
from effbench.contracts import EffbenchError
from effbench.submission import Submission

MANIFEST = "effbench.toml"


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def sub(demo_submission: Path, tmp_path: Path) -> Path:
    """A private, absolute copy of the session's demo submission, free to break."""
    return Path(shutil.copytree(demo_submission, tmp_path / "sub")).resolve()


@pytest.fixture(scope="module")
def other_demo(tmp_path_factory) -> Path:
    """A second demo whose hidden size (256) differs from the session demo's (128)."""
    from effbench.demo import build_demo

    return build_demo(tmp_path_factory.mktemp("other") / "other", hidden_size=256, num_heads=4).resolve()


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(v)  # a JSON string is a valid TOML basic string


def write_manifest(folder: Path, data: dict) -> None:
    lines = [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for k, v in data.items():
        if isinstance(v, dict):
            lines += ["", f"[{json.dumps(k)}]"] + [f"{json.dumps(kk)} = {_toml_value(vv)}" for kk, vv in v.items()]
    (folder / MANIFEST).write_text("\n".join(lines) + "\n")


def edit(folder: Path, **changes) -> None:
    """Change manifest keys; None deletes a key; a dict is merged into the table of that name."""
    data = tomllib.loads((folder / MANIFEST).read_text())
    for k, v in changes.items():
        if v is None:
            data.pop(k, None)
        elif isinstance(v, dict) and isinstance(data.get(k), dict):
            data[k] = {**data[k], **v}
        else:
            data[k] = v
    write_manifest(folder, data)


def write_safetensors_raw(path: Path, header: object) -> None:
    """A safetensors file with an arbitrary JSON header (and no tensor data)."""
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)


def save_lora(path: Path, tensors: dict[str, tuple[int, ...]]) -> None:
    import torch
    from safetensors.torch import save_file

    save_file({k: torch.zeros(shape) for k, shape in tensors.items()}, str(path))


def load_error(folder: Path, **kw) -> str:
    """Submission.load must refuse `folder` with a one-line EffbenchError; returns the message."""
    with pytest.raises(EffbenchError) as info:
        Submission.load(folder, **kw)
    msg = str(info.value)
    assert msg, "empty error message"
    assert "\n" not in msg and "\r" not in msg, f"error is not one line: {msg!r}"
    return msg


def cli_run(folder: Path, *args: str):
    return CliRunner().invoke(app, ["run", str(folder), *args])


def assert_cli_refuses(folder: Path, message: str | None = None, *args: str) -> str:
    result = cli_run(folder, *args)
    out = result.output  # click >= 8.2 mixes stderr into output
    assert isinstance(result.exception, SystemExit), f"uncaught {result.exception!r}\n{out}"
    assert result.exit_code == 2, out
    assert "error:" in out, out
    assert "Traceback" not in out, out
    error_lines = [line for line in out.splitlines() if "error:" in line]
    assert len(error_lines) == 1, out
    if message is not None:  # the CLI shows the message verbatim, on the error: line
        assert error_lines[0].endswith(message), f"{error_lines[0]!r} != {message!r}"
    return out


# --------------------------------------------------------------------------- positive


def test_untouched_copy_loads_with_absolute_paths(sub: Path) -> None:
    s = Submission.load(sub)
    assert s.folder == sub and s.folder.is_absolute()
    assert s.manifest_path == sub / MANIFEST
    assert s.name == "demo"
    assert s.base_id is None
    for d, expected in ((s.base_dir, sub / "base"), (s.adapter_dir, sub / "adapter"), (s.tokenizer_dir, sub / "base")):
        assert d is not None and d.is_absolute() and d.is_dir()
        assert d == expected
        assert d.is_relative_to(sub)
    m = s.manifest
    assert (m.backend, m.dtype, m.quantization) == ("hf", "float32", "none")
    assert (m.limits.max_batch_size, m.limits.max_sequence_length) == (8, 2048)
    assert not s.allow_pickle and not s.trust_remote_code


def test_a_config_checked_once_is_not_rebuilt_on_the_next_load(sub: Path, tmp_path: Path) -> None:
    """config.json against the weights builds the model on the meta device, which imports
    transformers' model code (~4 s of every run's start); a pass is remembered per (config,
    shapes, versions) in the cache, a failure never is, and a changed config is checked again."""
    import subprocess
    import sys

    env = {**os.environ, "EFFBENCH_CACHE": str(tmp_path / "cache")}
    probe = ("import sys; from effbench.submission import Submission; Submission.load(sys.argv[1]);"
             " print('transformers.models.auto.modeling_auto' in sys.modules)")
    first, second = (subprocess.run([sys.executable, "-c", probe, str(sub)], env=env, capture_output=True, text=True,
                                    check=True).stdout.split()[-1] for _ in range(2))
    assert (first, second) == ("True", "False")
    assert len(list((tmp_path / "cache" / "checked-configs").iterdir())) == 1
    cfg = json.loads((sub / "base" / "config.json").read_text())
    cfg["num_hidden_layers"] += 1  # no longer the weights' config: checked again, and refused
    (sub / "base" / "config.json").write_text(json.dumps(cfg))
    bad = subprocess.run([sys.executable, "-c", probe, str(sub)], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "does not match the weights" in bad.stderr
    assert len(list((tmp_path / "cache" / "checked-configs").iterdir())) == 1


def test_relative_folder_is_resolved(sub: Path, monkeypatch) -> None:
    monkeypatch.chdir(sub.parent)
    s = Submission.load(sub.name)
    assert s.folder == sub
    assert s.base_dir == sub / "base" and s.adapter_dir == sub / "adapter" and s.tokenizer_dir == sub / "base"


def test_separate_tokenizer_folder(sub: Path) -> None:
    (sub / "tok").mkdir()
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.move(sub / "base" / f, sub / "tok" / f)
    edit(sub, tokenizer="tok")
    s = Submission.load(sub)
    assert s.tokenizer_dir == sub / "tok" and s.base_dir == sub / "base"


def test_no_adapter(sub: Path) -> None:
    shutil.rmtree(sub / "adapter")
    edit(sub, adapter=None)
    s = Submission.load(sub)
    assert s.adapter_dir is None and s.base_dir == sub / "base"


def test_hub_id_base_is_not_a_folder(sub: Path) -> None:
    edit(sub, base="some-org/some-model", adapter=None)
    s = Submission.load(sub)
    assert s.base_dir is None and s.base_id == "some-org/some-model" and s.tokenizer_dir is None


def test_defaults_from_a_minimal_manifest(sub: Path) -> None:
    write_manifest(sub, {"name": "x", "base": "base"})
    s = Submission.load(sub)
    assert s.adapter_dir is None
    m = s.manifest
    assert (m.backend, m.dtype, m.quantization, m.limits.max_batch_size) == ("hf", "float32", "none", 8)


def test_backend_options_reach_the_backend(sub: Path, tmp_path: Path) -> None:
    """What the manifest's [backend_args] set, and its backend's option defaults for the rest
    (effbench/backends/options.py), are what the backend gets; --backend keeps only what was set."""
    from effbench.backends import make_backend
    from effbench.backends.options import FaultOptions, HTTPOptions, VLLMOptions

    edit(sub, backend="http", endpoint="http://127.0.0.1:9", backend_args={"retries": 5})
    be = make_backend(Submission.load(sub))
    assert (be.retries, be.timeout_s, be.concurrency) == (5, HTTPOptions().timeout_s, 8)

    edit(sub, backend="fault", endpoint=None, backend_args=None)
    edit(sub, backend_args={"delay_s": 1, "prefix_reuse": False, "once": True, "state_dir": str(tmp_path / "state")})
    be = make_backend(Submission.load(sub))
    assert (be.delay_s, be.prefix_reuse, be.once, be.hang_on_batch) == (1.0, False, True, FaultOptions().hang_on_batch)
    assert be.prefix_cache_bytes is FaultOptions().prefix_cache_bytes and be.state_dir.is_dir()
    with pytest.raises(EffbenchError, match=r"--backend: .*backend_args.prefix_reuse: not an engine argument"):
        Submission.load(sub).with_backend("vllm")  # an hf option means nothing to vllm

    edit(sub, backend="vllm", backend_args=None)
    edit(sub, backend_args={"lora_mode": "adapter", "enforce_eager": True, "max_num_seqs": 4})
    be = make_backend(Submission.load(sub))  # made, not started: vLLM itself is not imported
    assert (be.lora_mode, be.engine_args) == ("adapter", {"enforce_eager": True, "max_num_seqs": 4})
    edit(sub, backend_args=None)
    plain = Submission.load(sub)
    assert make_backend(plain).lora_mode == VLLMOptions().lora_mode
    assert plain.with_backend("hf").manifest.backend_args.prefix_reuse is True  # the defaults of the new backend


# --------------------------------------------------------------------------- mistakes

NOT_A_PICKLE = b"\x80\x04 this is not a pickle and must never be unpickled"


def _remove(rel: str):
    def go(d: Path) -> None:
        p = d / rel
        shutil.rmtree(p) if p.is_dir() else p.unlink()

    return go


def _write(rel: str, data: bytes | str):
    def go(d: Path) -> None:
        (d / rel).write_bytes(data.encode() if isinstance(data, str) else data)

    return go


def _edit(**changes):
    return lambda d: edit(d, **changes)


def _edit_json(rel: str, **changes):
    def go(d: Path) -> None:
        p = d / rel
        p.write_text(json.dumps({**json.loads(p.read_text()), **changes}))

    return go


def _replace(rel: str, new_name: str, data: bytes):
    def go(d: Path) -> None:
        (d / rel).unlink()
        (d / rel).with_name(new_name).write_bytes(data)

    return go


def _both(*fs):
    def go(d: Path) -> None:
        for f in fs:
            f(d)

    return go


def _untokenized_folder(d: Path) -> None:
    (d / "tok").mkdir()
    edit(d, tokenizer="tok")


def _lora_on_missing_module(d: Path) -> None:
    prefix = "base_model.model.model.layers.0.self_attn.nonexistent"
    save_lora(d / "adapter" / "adapter_model.safetensors", {f"{prefix}.lora_A.weight": (8, 128), f"{prefix}.lora_B.weight": (128, 8)})


def _lora_with_wrong_in_features(d: Path) -> None:
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    save_lora(d / "adapter" / "adapter_model.safetensors", {f"{prefix}.lora_A.weight": (8, 7), f"{prefix}.lora_B.weight": (128, 8)})


def _adapter_without_lora_tensors(d: Path) -> None:
    save_lora(d / "adapter" / "adapter_model.safetensors", {"base_model.model.model.norm.weight": (128,)})


def _lora_tensor_of_shape_0d(d: Path) -> None:
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    save_lora(d / "adapter" / "adapter_model.safetensors", {f"{prefix}.lora_A.weight": (), f"{prefix}.lora_B.weight": (128, 8)})


def _cut_short(rel: str, drop: int):
    def go(d: Path) -> None:
        data = (d / rel).read_bytes()
        (d / rel).write_bytes(data[:-drop])

    return go


def _link_loop(d: Path) -> None:
    (d / "loop_a").symlink_to(d / "loop_b")
    (d / "loop_b").symlink_to(d / "loop_a")
    edit(d, base="loop_a")


def _file_link_loop(d: Path) -> None:
    (d / "base" / "extra.json").symlink_to(d / "base" / "extra.json")


F = lambda rel: (lambda d: str(d / rel))  # noqa: E731  an expected substring: that path, in this copy

# id, mutation of the copy, substrings the message must contain (str, or callable of the folder),
# the manifest field it must name (None: no field applies, the manifest itself is unusable).
MISTAKES = [
    # 1-3: folder, manifest file, TOML syntax
    pytest.param(lambda d: shutil.rmtree(d), [F(""), "submission folder does not exist"], None, id="folder-missing"),
    pytest.param(_remove(MANIFEST), [F(MANIFEST), "manifest missing"], None, id="manifest-missing"),
    pytest.param(_write(MANIFEST, 'name = "demo\nbase = \n'), [F(MANIFEST), "not valid TOML"], None, id="manifest-not-toml"),
    pytest.param(_write(MANIFEST, "[limits]\nmax_batch_size = 1\n[limits]\n"), [F(MANIFEST), "not valid TOML"], None,
                 id="manifest-duplicate-table"),
    # 4: unknown keys
    pytest.param(_edit(colour="red"), [F(MANIFEST), "unknown key"], "colour", id="unknown-top-key"),
    pytest.param(_edit(limits={"foo": 1}), [F(MANIFEST), "unknown key"], "limits.foo", id="unknown-limits-key"),
    # 5: required keys
    pytest.param(_edit(name=None), [F(MANIFEST), "required but missing"], "name", id="missing-name"),
    pytest.param(_edit(base=None), [F(MANIFEST), "required but missing"], "base", id="missing-base"),
    # 6: wrong types and values
    pytest.param(_edit(dtype="float8"), [F(MANIFEST), "float8"], "dtype", id="bad-dtype"),
    pytest.param(_edit(quantization="gptq"), [F(MANIFEST), "gptq"], "quantization", id="bad-quantization"),
    pytest.param(_edit(backend="nope"), [F(MANIFEST), "unknown backend", "nope"], "backend", id="bad-backend"),
    pytest.param(_edit(limits={"max_batch_size": 0}), [F(MANIFEST), "(got 0)"], "limits.max_batch_size", id="batch-size-0"),
    pytest.param(_edit(limits={"max_batch_size": 5000}), [F(MANIFEST), "5000"], "limits.max_batch_size", id="batch-size-huge"),
    pytest.param(_edit(limits={"max_sequence_length": 8}), [F(MANIFEST), "(got 8)"], "limits.max_sequence_length",
                 id="sequence-length-8"),
    pytest.param(_edit(limits={"max_batch_size": "eight"}), [F(MANIFEST), "eight"], "limits.max_batch_size",
                 id="batch-size-string"),
    pytest.param(_edit(limits=3), [F(MANIFEST)], "limits", id="limits-not-a-table"),
    pytest.param(_edit(name=3), [F(MANIFEST)], "name", id="name-not-a-string"),
    pytest.param(_edit(name="my model"), [F(MANIFEST), "my model"], "name", id="name-with-space"),
    pytest.param(_edit(name="x\ny"), [F(MANIFEST)], "name", id="name-with-newline"),
    pytest.param(_edit(base=""), [F(MANIFEST)], "base", id="base-empty"),
    # 7-8: folders
    pytest.param(_edit(base="nope"), [F(MANIFEST), F("nope"), "does not exist"], "base", id="base-folder-missing"),
    pytest.param(_edit(base="base/model.safetensors"), [F(MANIFEST), "does not exist"], "base", id="base-is-a-file"),
    pytest.param(_remove("adapter"), [F(MANIFEST), F("adapter"), "does not exist"], "adapter", id="adapter-folder-missing"),
    pytest.param(_edit(adapter="nope"), [F(MANIFEST), F("nope"), "does not exist"], "adapter", id="adapter-path-wrong"),
    # base folder contents
    pytest.param(_remove("base/config.json"), [F(MANIFEST), F("base/config.json"), "missing"], "base", id="base-config-missing"),
    pytest.param(_write("base/config.json", "{not json"), [F("base/config.json"), "not valid JSON"], "base",
                 id="base-config-not-json"),
    pytest.param(_remove("base/model.safetensors"), [F(MANIFEST), "no weights"], "base", id="base-no-weights"),
    # 9: tokenizer
    pytest.param(_remove("base/tokenizer.json"), [F(MANIFEST), F("base"), "no tokenizer"], "base", id="base-no-tokenizer"),
    pytest.param(_edit(tokenizer="tok"), [F(MANIFEST), F("tok"), "does not exist"], "tokenizer", id="tokenizer-folder-missing"),
    pytest.param(_untokenized_folder, [F(MANIFEST), F("tok"), "no tokenizer"], "tokenizer", id="tokenizer-folder-empty"),
    # 10: pickle weights
    pytest.param(_replace("base/model.safetensors", "pytorch_model.bin", NOT_A_PICKLE),
                 [F(MANIFEST), "pytorch_model.bin", "pickle", "--allow-pickle"], "base", id="base-pickle-only"),
    pytest.param(_replace("adapter/adapter_model.safetensors", "adapter_model.bin", NOT_A_PICKLE),
                 [F(MANIFEST), "adapter_model.bin", "pickle", "--allow-pickle"], "adapter", id="adapter-pickle-only"),
    pytest.param(_replace("base/model.safetensors", "model.ckpt", NOT_A_PICKLE),
                 [F(MANIFEST), "model.ckpt", "--allow-pickle"], "base", id="base-ckpt-only"),
    # 12 (and a shape mismatch within the same model size)
    pytest.param(_lora_on_missing_module,
                 [F("adapter/adapter_model.safetensors"), "nonexistent", "adapter does not match base"], "adapter",
                 id="adapter-targets-missing-module"),
    pytest.param(_lora_with_wrong_in_features,
                 [F("adapter/adapter_model.safetensors"), "[8, 7]", "[128, 128]", "adapter does not match base"], "adapter",
                 id="adapter-wrong-in-features"),
    # 13: adapter config
    pytest.param(_edit_json("adapter/adapter_config.json", peft_type="PREFIX_TUNING"),
                 [F("adapter/adapter_config.json"), "PREFIX_TUNING", "not LORA"], "peft_type", id="adapter-prefix-tuning"),
    pytest.param(_remove("adapter/adapter_config.json"), [F(MANIFEST), F("adapter/adapter_config.json")], "adapter",
                 id="adapter-config-missing"),
    pytest.param(_write("adapter/adapter_config.json", "{"), [F("adapter/adapter_config.json"), "not valid JSON"], "adapter",
                 id="adapter-config-not-json"),
    pytest.param(_remove("adapter/adapter_model.safetensors"), [F(MANIFEST), "no weights"], "adapter", id="adapter-no-weights"),
    # 14: remote code
    pytest.param(_edit_json("base/config.json", auto_map={"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}),
                 [F("base/config.json"), "--trust-remote-code"], "auto_map", id="base-remote-code"),
    # 15: corrupt safetensors (that these errors also name a field: see test_corrupt_safetensors_names_field)
    pytest.param(_write("base/model.safetensors", b"abc"), [F("base/model.safetensors"), "not a safetensors file"], None,
                 id="base-safetensors-3-bytes"),
    pytest.param(_write("adapter/adapter_model.safetensors", b"abc"),
                 [F("adapter/adapter_model.safetensors"), "not a safetensors file"], None, id="adapter-safetensors-3-bytes"),
    pytest.param(_write("base/model.safetensors", struct.pack("<Q", 2**40) + b"{}"),
                 [F("base/model.safetensors"), "not a safetensors file"], None, id="base-safetensors-huge-header"),
    pytest.param(_write("base/model.safetensors", struct.pack("<Q", 5) + b"hello"),
                 [F("base/model.safetensors"), "not a safetensors file"], None, id="base-safetensors-header-not-json"),
    pytest.param(_write("base/model.safetensors", struct.pack("<Q", 100) + b'{"model.norm.weight": {'),
                 [F("base/model.safetensors"), "not a safetensors file"], None, id="base-safetensors-header-cut"),
    # Robustness: valid syntax, wrong structure.
    pytest.param(_write(MANIFEST, b'name = "d\xffmo"\nbase = "base"\n'), [F(MANIFEST)], None, id="manifest-not-utf8"),
    pytest.param(_write("base/config.json", "[]"), [F("base/config.json")], "base", id="base-config-is-a-list"),
    pytest.param(_write("adapter/adapter_config.json", "[]"), [F("adapter/adapter_config.json")], "adapter",
                 id="adapter-config-is-a-list"),
    pytest.param(lambda d: write_safetensors_raw(d / "base/model.safetensors", []), [F("base/model.safetensors")], None,
                 id="base-safetensors-header-is-a-list"),
    pytest.param(lambda d: write_safetensors_raw(d / "base/model.safetensors", {"model.norm.weight": {"dtype": "F32"}}),
                 [F("base/model.safetensors")], None, id="base-safetensors-entry-without-shape"),
    pytest.param(_write("base/model.safetensors", struct.pack("<Q", 100) + b"{}"), [F("base/model.safetensors")], None,
                 id="base-safetensors-header-longer-than-file"),
    # Silent wrong inputs, now refused (issue 13): an adapter that would change nothing
    pytest.param(_adapter_without_lora_tensors, [F("adapter/adapter_model.safetensors"), "no LoRA tensors"], "adapter",
                 id="adapter-without-lora-tensors"),
    pytest.param(lambda d: save_lora(d / "adapter" / "adapter_model.safetensors", {}),
                 [F("adapter/adapter_model.safetensors"), "no LoRA tensors"], "adapter", id="adapter-without-tensors"),
    pytest.param(_edit_json("adapter/adapter_config.json", target_modules=["nonexistent_proj"]),
                 [F("adapter/adapter_config.json"), "matches no module of the base"], "target_modules",
                 id="adapter-target-modules-match-nothing"),
    pytest.param(_edit_json("adapter/adapter_config.json", target_modules=".*\\.nothing_here"),
                 [F("adapter/adapter_config.json"), "matches no module of the base"], "target_modules",
                 id="adapter-target-modules-regex-matches-nothing"),
    # Broken files that used to end in a traceback: one line each
    pytest.param(_lora_tensor_of_shape_0d, [F("adapter/adapter_model.safetensors"), "shape []", "2 dimensions"], "adapter",
                 id="adapter-tensor-shape-0d"),
    pytest.param(_cut_short("base/model.safetensors", 1000), [F("base/model.safetensors"), "data cut short"], "base",
                 id="base-safetensors-data-cut-short"),
    pytest.param(_cut_short("adapter/adapter_model.safetensors", 10), [F("adapter/adapter_model.safetensors"), "data cut short"],
                 "adapter", id="adapter-safetensors-data-cut-short"),
    pytest.param(_cut_short("base/tokenizer.json", 50), [F("base/tokenizer.json"), "not a valid tokenizer"], "base",
                 id="tokenizer-json-cut-short"),
    pytest.param(_write("base/tokenizer.json", '{"model": {"type": "NoSuchModel"}}'),
                 [F("base/tokenizer.json"), "not a valid tokenizer"], "base", id="tokenizer-json-wrong-content"),
    pytest.param(_edit_json("base/config.json", num_hidden_layers=3),
                 [F("base/config.json"), "model.layers.2", "does not match the weights"], "base", id="config-more-layers-than-weights"),
    pytest.param(_edit_json("base/config.json", intermediate_size=1000),
                 [F("base/config.json"), "mlp", "does not match the weights"], "base", id="config-other-sizes-than-weights"),
    pytest.param(_edit_json("base/config.json", model_type="no-such-architecture"),
                 [F("base/config.json"), "no-such-architecture"], "model_type", id="config-unknown-model-type"),
    pytest.param(_link_loop, [F("loop_a"), "symlink loop"], "base", id="base-symlink-loop"),
    pytest.param(_file_link_loop, [F("base/extra.json")], "base", id="file-symlink-loop-in-base"),
    # Remote code and what a manifest may not pass to a backend
    pytest.param(_edit_json("base/tokenizer_config.json", auto_map={"AutoTokenizer": ["tokenization_evil.Evil", None]}),
                 [F("base/tokenizer_config.json"), "--trust-remote-code"], "auto_map", id="tokenizer-config-remote-code"),
    pytest.param(_write("base/modeling_evil.py", "raise SystemExit('ran')\n"), [F("base/modeling_evil.py"), "--trust-remote-code"],
                 "base", id="python-file-in-base"),
    pytest.param(_write("adapter/helper.py", "x = 1\n"), [F("adapter/helper.py"), "--trust-remote-code"], "adapter",
                 id="python-file-in-adapter"),
    pytest.param(_edit(backend_args={"trust_remote_code": True}), [F(MANIFEST), "--trust-remote-code"],
                 "backend_args.trust_remote_code", id="backend-args-trust-remote-code-hf"),
    pytest.param(_edit(backend="vllm", backend_args={"trust_remote_code": True}), [F(MANIFEST), "--trust-remote-code"],
                 "backend_args.trust_remote_code", id="backend-args-trust-remote-code-vllm"),
    pytest.param(_edit(backend="vllm", backend_args={"tokenizer": "/elsewhere/tok"}), [F(MANIFEST), "not allowed"],
                 "backend_args.tokenizer", id="backend-args-tokenizer-vllm"),
    pytest.param(_edit(backend="vllm", backend_args={"download_dir": "/tmp/x"}), [F(MANIFEST), "not allowed"],
                 "backend_args.download_dir", id="backend-args-download-dir-vllm"),
    pytest.param(_edit(backend="vllm", backend_args={"hf_overrides": "{}"}), [F(MANIFEST), "not allowed"],
                 "backend_args.hf_overrides", id="backend-args-hf-overrides-vllm"),
    pytest.param(_edit(backend="vllm", backend_args={"load_format": "pt"}), [F(MANIFEST), "unpickles"],
                 "backend_args.load_format", id="backend-args-load-format-vllm"),
    pytest.param(_edit(backend="vllm", backend_args={"max_num_partial_prefills": 2}), [F(MANIFEST), "not an engine argument"],
                 "backend_args.max_num_partial_prefills", id="backend-args-unlisted-vllm"),
    pytest.param(_edit(backend="vllm", backend_args={"enforce_eager": ["a"]}), [F(MANIFEST), "Input should be a valid boolean"],
                 "backend_args.enforce_eager", id="backend-args-non-scalar-vllm"),
    # [backend_args] typed per backend (effbench/backends/options.py), refused when the manifest is read
    pytest.param(_edit(backend_args={"prefix_cache_entries": 2}), [F(MANIFEST), "not an option of the hf backend",
                 "prefix_cache_bytes"], "backend_args.prefix_cache_entries", id="backend-args-unknown-hf"),
    pytest.param(_edit(backend_args={"prefix_cache_bytes": True}), [F(MANIFEST), "Input should be a valid integer (got True)"],
                 "backend_args.prefix_cache_bytes", id="backend-args-bool-for-int-hf"),
    pytest.param(_edit(backend_args={"prefix_reuse": "no"}), [F(MANIFEST), "Input should be a valid boolean (got 'no')"],
                 "backend_args.prefix_reuse", id="backend-args-string-for-bool-hf"),
    pytest.param(_edit(backend_args={"prefill_chunk_tokens": -1}), [F(MANIFEST), "greater than or equal to 0"],
                 "backend_args.prefill_chunk_tokens", id="backend-args-negative-hf"),
    pytest.param(_edit(backend="vllm", backend_args={"max_num_seqs": True}), [F(MANIFEST), "Input should be a valid integer"],
                 "backend_args.max_num_seqs", id="backend-args-bool-for-int-vllm"),
    pytest.param(_edit(backend="vllm", backend_args={"enforce_eager": "true"}), [F(MANIFEST), "Input should be a valid boolean"],
                 "backend_args.enforce_eager", id="backend-args-string-for-bool-vllm"),
    pytest.param(_edit(backend="vllm", backend_args={"lora_mode": "both"}), [F(MANIFEST), "'merged' or 'adapter'"],
                 "backend_args.lora_mode", id="backend-args-lora-mode-vllm"),
    pytest.param(_edit(backend="vllm", backend_args={"prefix_reuse": False}), [F(MANIFEST), "not an engine argument"],
                 "backend_args.prefix_reuse", id="backend-args-hf-option-on-vllm"),
    pytest.param(_edit(backend="http", endpoint="http://127.0.0.1:9", backend_args={"timeout": 5}),
                 [F(MANIFEST), "not an option of the http backend", "timeout_s"], "backend_args.timeout", id="backend-args-unknown-http"),
    pytest.param(_edit(backend="http", endpoint="http://127.0.0.1:9", backend_args={"retries": True}),
                 [F(MANIFEST), "Input should be a valid integer"], "backend_args.retries", id="backend-args-bool-for-int-http"),
    pytest.param(_edit(backend="http", endpoint="http://127.0.0.1:9", backend_args={"timeout_s": "60"}),
                 [F(MANIFEST), "Input should be a valid number"], "backend_args.timeout_s", id="backend-args-string-for-float-http"),
    pytest.param(_edit(backend="http", endpoint="http://127.0.0.1:9", backend_args={"trust_remote_code": True}),
                 [F(MANIFEST), "--trust-remote-code"], "backend_args.trust_remote_code", id="backend-args-trust-remote-code-http"),
    pytest.param(_edit(backend="fault", backend_args={"delay_ms": 5}), [F(MANIFEST), "not an option of the fault backend"],
                 "backend_args.delay_ms", id="backend-args-unknown-fault"),
    pytest.param(_edit(backend="fault", backend_args={"crash_on_batch": True}), [F(MANIFEST), "Input should be a valid integer"],
                 "backend_args.crash_on_batch", id="backend-args-bool-for-int-fault"),
    pytest.param(_edit(backend="fault", backend_args={"prefix_reuse": "false"}), [F(MANIFEST), "Input should be a valid boolean"],
                 "backend_args.prefix_reuse", id="backend-args-string-for-bool-fault"),
    pytest.param(_edit(backend="fault", backend_args={"device": "cuda:1"}), [F(MANIFEST), "not allowed"],
                 "backend_args.device", id="backend-args-device-fault"),
    pytest.param(_edit(backend="fault", backend_args={"once": True}), [F(MANIFEST), "need it"],
                 "backend_args.state_dir", id="backend-args-once-without-state-dir-fault"),
    # Paths that leave the submission folder
    pytest.param(_edit(base="../elsewhere"), [F(MANIFEST), "outside the submission folder", "--allow-outside-paths"], "base",
                 id="base-dot-dot"),
    pytest.param(_edit(base="/etc"), [F(MANIFEST), "outside the submission folder"], "base", id="base-absolute"),
    pytest.param(_edit(tokenizer="/tmp"), [F(MANIFEST), "outside the submission folder"], "tokenizer", id="tokenizer-absolute"),
]


def _expected(folder: Path, substrings) -> list[str]:
    return [s(folder) if callable(s) else s for s in substrings]


@pytest.mark.parametrize(("mutate", "substrings", "field"), MISTAKES)
def test_load_refuses(sub: Path, mutate, substrings, field) -> None:
    mutate(sub)
    msg = load_error(sub)
    for s in _expected(sub, substrings):
        assert s in msg, f"{s!r} not in {msg!r}"
    if field is not None:
        assert f"field '{field}'" in msg, msg


@pytest.mark.parametrize(("mutate", "substrings", "field"), MISTAKES)
def test_cli_refuses(sub: Path, mutate, substrings, field) -> None:
    mutate(sub)
    try:  # only to learn the message; a crash here is test_load_refuses's business
        Submission.load(sub)
    except EffbenchError as e:
        msg = str(e)
    except Exception:
        msg = None
    else:  # never let the CLI go on to load a broken model
        pytest.fail("validation accepted the broken submission")
    out = assert_cli_refuses(sub, msg)
    for s in _expected(sub, substrings):
        assert s in out


# --------------------------------------------------------------------------- mistakes needing more set-up


def test_adapter_of_another_base_size(sub: Path, other_demo: Path) -> None:
    """11: the adapter of a hidden-size-256 model on the hidden-size-128 base (outside the
    submission folder, so only with --allow-outside-paths)."""
    edit(sub, adapter=str(other_demo / "adapter"))
    msg = load_error(sub, allow_outside_paths=True)
    assert "adapter does not match base" in msg and "field 'adapter'" in msg
    assert str(other_demo / "adapter" / "adapter_model.safetensors") in msg
    shapes = re.search(r"has shape (\[[\d, ]+\]) but base weight '([\w.]+)' is (\[[\d, ]+\])", msg)
    assert shapes, msg
    lora_shape, base_shape = json.loads(shapes.group(1)), json.loads(shapes.group(3))
    assert 256 in lora_shape and 256 not in base_shape and 128 in base_shape
    assert_cli_refuses(sub, msg, "--allow-outside-paths")


def test_adapter_of_another_base_size_relative_path(sub: Path, other_demo: Path) -> None:
    shutil.copytree(other_demo / "adapter", sub / "adapter256")
    edit(sub, adapter="adapter256")
    msg = load_error(sub)
    assert str(sub / "adapter256" / "adapter_model.safetensors") in msg
    assert "adapter does not match base" in msg and "field 'adapter'" in msg


def test_other_demo_is_itself_valid(other_demo: Path) -> None:
    s = Submission.load(other_demo)  # the mismatch above is the pairing, not the other demo
    assert s.adapter_dir == other_demo / "adapter"


@pytest.mark.parametrize("rel", ["base/model.safetensors", "adapter/adapter_model.safetensors"])
def test_corrupt_safetensors_names_field(sub: Path, rel: str) -> None:
    (sub / rel).write_bytes(b"abc")
    msg = load_error(sub)
    assert f"field '{rel.split('/')[0]}'" in msg, msg


# --------------------------------------------------------------------------- trust flags


def test_allow_pickle_accepts_pickle_base_without_loading_it(sub: Path) -> None:
    _replace("base/model.safetensors", "pytorch_model.bin", NOT_A_PICKLE)(sub)
    s = Submission.load(sub, allow_pickle=True)  # NOT_A_PICKLE would raise if it were unpickled
    assert s.allow_pickle and s.base_dir == sub / "base"


def test_allow_pickle_accepts_pickle_adapter(sub: Path) -> None:
    _replace("adapter/adapter_model.safetensors", "adapter_model.bin", NOT_A_PICKLE)(sub)
    s = Submission.load(sub, allow_pickle=True)
    assert s.allow_pickle and s.adapter_dir == sub / "adapter"


def test_safetensors_preferred_over_pickle(sub: Path) -> None:
    (sub / "base" / "pytorch_model.bin").write_bytes(NOT_A_PICKLE)  # next to model.safetensors: ignored
    assert Submission.load(sub).base_dir == sub / "base"


def test_trust_remote_code_accepts_auto_map(sub: Path) -> None:
    _edit_json("base/config.json", auto_map={"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"})(sub)
    s = Submission.load(sub, trust_remote_code=True)
    assert s.trust_remote_code and s.base_dir == sub / "base"


def test_empty_auto_map_is_not_remote_code(sub: Path) -> None:
    _edit_json("base/config.json", auto_map={})(sub)
    assert Submission.load(sub).base_dir == sub / "base"


def test_trust_flags_do_not_hide_other_mistakes(sub: Path) -> None:
    _replace("base/model.safetensors", "pytorch_model.bin", NOT_A_PICKLE)(sub)
    (sub / "base" / "tokenizer.json").unlink()
    msg = load_error(sub, allow_pickle=True, trust_remote_code=True)
    assert "no tokenizer" in msg and "field 'base'" in msg


# --------------------------------------------------------------------------- CLI message rendering


@pytest.mark.parametrize("base", ["model[v2]", "weights[/tmp]"])
def test_cli_prints_message_with_brackets_verbatim(sub: Path, base: str) -> None:
    edit(sub, base=base)
    msg = load_error(sub)
    assert base in msg and "field 'base'" in msg
    assert_cli_refuses(sub, msg)


def test_hub_base_offline_is_one_line_error(sub: Path, tmp_path: Path) -> None:
    edit(sub, base="effbench-test/no-such-model")
    res = CliRunner().invoke(app, ["run", str(sub), "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c")])
    assert res.exit_code == 2, res.output
    assert "field 'base': cannot fetch hub model 'effbench-test/no-such-model'" in res.output
    assert "Traceback" not in res.output

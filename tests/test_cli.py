"""The command line: help texts, version, demo builder, suite listing."""

from __future__ import annotations

import filecmp
import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from effbench import __version__
from effbench.cli import app
from effbench.submission import Submission

runner = CliRunner()


def test_version():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"effbench {__version__}"


@pytest.mark.parametrize("command", ["run", "demo", "suites"])
def test_every_command_explains_itself(command):
    res = runner.invoke(app, [command, "--help"])
    assert res.exit_code == 0
    assert "Usage:" in res.output and len(res.output.splitlines()) > 5


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "effbench.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("run", "demo", "suites"):
        assert command in out


@pytest.mark.parametrize("argv, code, stream, text", [
    (["--version"], 0, "stdout", f"effbench {__version__}"),
    (["run", "/no/such/folder"], 2, "stderr", "error: /no/such/folder: submission folder does not exist"),
    (["run"], 2, "stderr", "error: run: give a SUBMISSION folder"),
])
def test_the_console_exits_with_the_apps_code_and_flushed_output(argv, code, stream, text, tmp_path):
    """`python -m effbench.cli` ends with os._exit (no interpreter teardown, ~1 s saved): the exit
    code is the app's and what it printed reaches a pipe whole."""
    proc = subprocess.run([sys.executable, "-m", "effbench.cli", *argv], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert getattr(proc, stream).strip().startswith(text), (proc.stdout, proc.stderr)


def test_demo_is_deterministic_and_valid(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):  # a few training steps: the trained adapter is the same bytes too
        res = runner.invoke(app, ["demo", str(d), "--train-steps", "5"])
        assert res.exit_code == 0, res.output
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert {"effbench.toml", "base/model.safetensors", "base/tokenizer.json", "adapter/adapter_model.safetensors",
            "adapter/effbench_demo_training.json"} <= {str(f) for f in files}
    match, mismatch, errors = filecmp.cmpfiles(a, b, [str(f) for f in files], shallow=False)
    assert mismatch == ["effbench.toml"] and not errors  # only the name differs: each is named after its folder
    assert Submission.load(a).name == "a" and Submission.load(b).name == "b"
    sub = Submission.load(a)
    assert sub.adapter_dir is not None
    cfg = json.loads((a / "base" / "config.json").read_text())
    assert cfg["hidden_size"] // cfg["num_attention_heads"] == 64  # vLLM's CPU attention needs it
    tok = json.loads((a / "base" / "tokenizer_config.json").read_text())
    assert tok["model_max_length"] == 2048


def test_demo_adapter_is_not_zero(tmp_path):
    from safetensors import safe_open

    runner.invoke(app, ["demo", str(tmp_path / "d"), "--train-steps", "0"])  # the random adapter, before any training
    with safe_open(tmp_path / "d" / "adapter" / "adapter_model.safetensors", "pt") as f:
        b_keys = [k for k in f.keys() if "lora_B" in k]
        assert b_keys and all(f.get_tensor(k).abs().sum() > 0 for k in b_keys)


def test_demo_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    res = runner.invoke(app, ["demo", str(tmp_path / "x")])
    assert res.exit_code == 2 and "not empty" in res.output
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"


def test_suites_lists_the_default_suite():
    res = runner.invoke(app, ["suites"])
    assert res.exit_code == 0 and "default" in res.output

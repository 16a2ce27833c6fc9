# Two commands matter: `make demo` (the main job end to end on embedded defaults) and
# `make test` (the whole suite). Both create .venv from the lock file if it is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export EWS_DEMO_HOME ?= $(CURDIR)/.ews-demo
# Tests and the demo start many `ews` processes; without cached bytecode each one recompiles
# MLflow, scikit-learn and BentoML (about 10 s). An empty value lets Python write the cache.
export PYTHONDONTWRITEBYTECODE :=

.PHONY: demo test bench figures install lock clean-demo browser java ab

$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check uv==0.13.9
	@$(VENV)/bin/uv pip install -q --python $(PY) -r requirements.lock
	@$(VENV)/bin/uv pip install -q --python $(PY) --no-deps -e .
	@touch $(STAMP)

install: $(STAMP)

# Re-resolve the lock file after changing dependencies in pyproject.toml.
lock:
	@$(VENV)/bin/uv pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock

demo: $(STAMP)
	@$(PY) -m ews demo --home "$(EWS_DEMO_HOME)"

# Two workers, a test module on one of them (`--dist loadfile`: its module-scoped worlds are built once):
# the suite is mostly one-core Python and CI has 2 cores. Each session world is built once per run, by
# the first worker that needs it, and shared (tests/support/shared.py). The slowest setups and tests are printed at the end: the CI limit is 20 minutes.
test: $(STAMP) browser java ab
	@$(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadfile --durations=30 tests

# The web page is tested in a real headless Chromium: Debian's package (never a downloaded build).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is missing: sudo apt-get install chromium (the web-page test needs it)"; fi; }

# The Spark engine (features/engine/spark.py; its parity test) runs on Java 17: Debian's headless JRE.
java:
	@command -v java >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian openjdk-17-jre-headless for the Spark engine"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null; \
	  else echo "java is missing: sudo apt-get install openjdk-17-jre-headless (the Spark parity test needs it)"; fi; }

# The serving benchmark's second client, Apache's `ab` (benchmarks/latency.py measure_ab): Debian's apache2-utils.
ab:
	@command -v ab >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian apache2-utils (ab) for the serving benchmark"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq apache2-utils >/dev/null; \
	  else echo "ab is missing: sudo apt-get install apache2-utils (the serving benchmark's C client)"; fi; }

# Benchmarks measure the figures named in the issues; they are slow and run outside CI. Results and a
# SUMMARY.md go to bench-out/. Sizes: EWS_BENCH_SIZES="100000 1000000"; a quick proof of the chain:
#   EWS_BENCH_SIZES=3000 make bench BENCH_ARGS=--quick
bench: $(STAMP) java ab
	@$(PY) -m benchmarks.run $(BENCH_ARGS)

# Every figure quoted in README.md, training/DECISIONS.md and simulator/PROCESS.md, regenerated through
# the CLI stages with 95% intervals (bootstrap by student) into figures/figures.json and figures/FIGURES.md.
# Slow (worlds S and M, three ceiling worlds, the demo); outside CI. One step: FIGURES_ARGS="--only ceiling".
figures: $(STAMP)
	@$(PY) -m benchmarks.figures $(FIGURES_ARGS)

clean-demo:
	rm -rf "$(EWS_DEMO_HOME)"

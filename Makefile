# Set-up and checks on a fresh machine: `make demo` and `make test` are all it takes.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast test-cluster cluster-deps lint ui clean

# The venv, both distributions (editable) and the dev extras. Re-done when a pyproject changes.
# Byte-compiled on every core afterwards: pip's own compiling is serial and takes as long as
# the install. A few third-party files that are not Python 3.11 fail, as they do under pip.
$(STAMP): pyproject.toml plugins/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-compile -e '.[dev]' -e ./plugins
	$(BIN)/python -m compileall -qq -j 0 $(VENV)/lib || true
	touch $(STAMP)

install: $(STAMP)

# A real Optuna study on the embedded default data; results land in ./mlruns.
demo: $(STAMP)
	$(BIN)/infoflow plugins list
	$(BIN)/infoflow study quickstart
	@echo
	@echo "Runs are in ./mlruns/mlflow.db (one parent run per study, a child run per trial),"
	@echo "every trial's CKA matrices and plane series (figures for the best trials) in ./mlruns/artifacts, the Optuna study in ./mlruns/optuna.journal."
	@echo "Table of trials:  $(BIN)/infoflow report quickstart"
	@echo "MLflow UI:        $(BIN)/infoflow ui   then browse http://127.0.0.1:5000"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# pytest exits 5 when it collects no test: make treats any non-zero status as a failure.
# Two workers, a test file each: most tests wait on subprocesses and SQLite, not the CPU.
# One torch thread per process: two workers and their subprocesses already fill 2 cores, and
# torch's spinning threads on oversubscribed cores make tiny steps ~10x slower.
test: lint
	OMP_NUM_THREADS=1 $(BIN)/pytest -n 2 --dist loadfile --durations=15

# The quick loop while working (under a minute): all but the tests marked slow, which run the
# real command in subprocesses, pip, servers, studies and multi-second training runs.
test-fast: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/pytest -m "not slow" -n 2

# Several hosts on real servers (tests/cluster): PostgreSQL and an MLflow server, three hosts
# as network namespaces, one cut off mid-trial. Needs root and Debian's postgresql package,
# which cluster-deps installs where it is missing. `.ci/run` runs it after `make test`.
test-cluster: $(STAMP) cluster-deps
	OMP_NUM_THREADS=1 $(BIN)/pytest -m cluster tests/cluster -s

cluster-deps:
	@ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 && command -v ip >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	   postgresql iproute2 util-linux >/dev/null)

ui: $(STAMP)
	$(BIN)/infoflow ui

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info plugins/*.egg-info

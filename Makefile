# ecqx-bench: every target creates and fills .venv on first use (nothing else is needed).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
SUITE  ?= digits
DATA   ?=
ARGS   ?=
WORKERS ?= 2

.PHONY: venv test test-slow lint format bench tables ablation ui server perf leaderboard fidelity clean-runs

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip==26.3
	$(PIP) install -q -c requirements.lock -e '.[dev]'
	# NNR codec (ISO/IEC 15938-17): builds from source (~75 s); declares numpy<2 but only its
	# DeepCABAC extension is used, which works on numpy 2, hence --no-deps.
	$(PIP) install -q pybind11==3.1.0 wheel==0.48.0 setuptools==84.2.1
	$(PIP) install -q --no-deps --no-build-isolation -c requirements.lock nncodec==2.1.3
	touch $(STAMP)

venv: $(STAMP)

test: venv
	$(PY) -m pytest -q -m "not slow"

test-slow: venv
	$(PY) -m pytest -q -m slow

lint: venv
	$(PY) -m ruff check ecqx baselines benchmarks tests
	$(PY) -m ruff format --check ecqx baselines benchmarks tests

format: venv
	$(PY) -m ruff format ecqx baselines benchmarks tests
	$(PY) -m ruff check --fix ecqx baselines benchmarks tests

bench: venv
	$(PY) -m benchmarks.cli suite $(SUITE) --workers $(WORKERS) $(if $(DATA),--data-dir $(DATA)) $(ARGS)

tables: venv
	$(PY) -m benchmarks.cli tables $(SUITE)

perf: venv
	$(PY) -m benchmarks.perf

fidelity: venv
	$(PY) -m benchmarks.fidelity --workers $(WORKERS) $(ARGS)

leaderboard: venv
	$(PY) -m benchmarks.cli leaderboard

ablation: venv
	$(PY) -m benchmarks.cli ablation $(SUITE) $(ARGS)

# A tracking server for several machines: runs in PostgreSQL, artifacts served by the server
# (stored under SERVER_ARTIFACTS). Every command then takes --tracking-uri http://HOST:SERVER_PORT.
SERVER_DB        ?= postgresql://postgres@127.0.0.1:5432/mlflow
SERVER_ARTIFACTS ?= runs/server-artifacts
SERVER_HOST      ?= 127.0.0.1
SERVER_PORT      ?= 5000

server: venv
	$(PY) -m benchmarks.server --backend-store-uri $(SERVER_DB) --artifacts-destination $(SERVER_ARTIFACTS) \
		--host $(SERVER_HOST) --port $(SERVER_PORT)

ui: venv
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///runs/mlflow.db --host 127.0.0.1 --port 5000

clean-runs:
	rm -rf runs

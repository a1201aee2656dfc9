# One obvious command per verb, the same locally and in CI.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev
VAR_DIR ?= $(or $(CSP_VAR_DIR),var)

WEB    := build/web

.PHONY: venv web run test test-fast test-postgres lint format bench clean

$(STAMP): requirements/dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements/dev.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e ./cli
	@touch $(STAMP)

venv: $(STAMP)

## make web: the analysts' page's npm packages (Leaflet; axe-core for its browser tests), exact pins
$(WEB)/.installed: services/gateway/web/package.json
	mkdir -p $(WEB)
	cp services/gateway/web/package.json $(WEB)/package.json
	cd $(WEB) && npm install --no-package-lock --no-audit --no-fund --ignore-scripts --loglevel=error
	@touch $@

web: $(WEB)/.installed

## make run: the whole hub on this machine (four processes, SQLite under var/, a demo data set)
run: venv web
	$(BIN)/python -m scripts.run

## make test: the whole suite (SQLite; CSP_TEST_DATABASE=postgresql for PostgreSQL)
test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## make test-fast: the inner loop — everything but end-to-end, slow and real-data tests, one worker
## per core (PYTEST_ARGS=-n0: one process). Bytecode is cached even where PYTHONDONTWRITEBYTECODE is
## set (compiling every module and rewriting every assert again took a sixth of a run), and the
## schemathesis plugin, which no test uses (the API fuzzing runs it), is not loaded in each worker.
test-fast: venv
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -q -m "not e2e and not slow and not realdata" \
		-p no:schemathesis -n auto $(PYTEST_ARGS)

test-postgres: venv
	CSP_TEST_DATABASE=postgresql $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy shared services scripts bench cli/csp_cli

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## make bench: every benchmark; figures in var/bench/results.json as ratios to a same-run baseline
bench: venv
	$(BIN)/python -m bench

## make clean: start afresh (databases, the demo marker, the internal secret, bench figures)
clean:
	rm -rf $(VAR_DIR)

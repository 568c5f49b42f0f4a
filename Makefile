# gossipchat: build the venv, run the demo, run the tests.
# Works on a fresh machine with Python 3.11 and access to the package registries.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: all venv demo run test lint typecheck unit integration fuzz bench bench-quick clean

all: test

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

## demo: start three local daemons that chat (and swap an image), then stop them
demo: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" bash deploy/demo.sh

## run: run one daemon in the foreground with the default home
run: $(STAMP)
	$(BIN)/gossipchatd

lint: $(STAMP)
	$(BIN)/ruff check daemon rpc clients tests harness deploy/examples $(wildcard bench)

# mypy resolves gossipchat.* through a symlink tree, because the package maps
# top-level folders (daemon/, rpc/, clients/) to gossipchat.daemon and so on. The
# dev-only harness/ (tests and bench import it) is checked as strictly; bench/ with
# the relaxed settings pyproject.toml gives it.
typecheck: $(STAMP)
	rm -rf .typecheck && mkdir -p .typecheck/gossipchat
	for d in daemon rpc clients; do ln -s ../../$$d .typecheck/gossipchat/$$d; done
	ln -s ../harness .typecheck/harness
	ln -s ../bench .typecheck/bench
	cd .typecheck && ../$(BIN)/mypy --config-file ../pyproject.toml \
		-p gossipchat.daemon -p gossipchat.rpc -p gossipchat.clients -p harness -p bench

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration tests/upstream $(PYTEST_ARGS)

## test: lint, type-check and the whole test suite
# pytest exits 5 when it collects no tests: report it, do not fail on it.
# The suite and the bench start daemon after daemon: byte-compile our packages first,
# even where PYTHONDONTWRITEBYTECODE is set, so that no daemon compiles them again.
COMPILE := $(BIN)/python -m compileall -q daemon rpc clients

test: lint typecheck
	$(COMPILE)
	$(BIN)/python -m pytest $(PYTEST_ARGS); code=$$?; \
	if [ $$code -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$code

## fuzz: the fuzz suites (tests/fuzz) with 30x the examples of `make test`, fresh randomness
# and the example database in .hypothesis/; a single property may run for minutes.
fuzz: $(STAMP)
	$(COMPILE)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest tests/fuzz --timeout=3600 \
		--hypothesis-show-statistics $(PYTEST_ARGS)

BENCH_STAMP := $(VENV)/.bench-stamp

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

## bench: the full benchmark suite (at most 15 minutes); bench-quick: about 3
bench: $(BENCH_STAMP)
	$(COMPILE)
	$(BIN)/python -m bench.run --full

bench-quick: $(BENCH_STAMP)
	$(COMPILE)
	$(BIN)/python -m bench.run --quick

clean:
	rm -rf $(VENV) .typecheck .pytest_cache .mypy_cache .ruff_cache *.egg-info

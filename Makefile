# hookline: two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TOOLS  := .tools/bin
STAMP  := $(VENV)/.installed
export PATH := $(CURDIR)/$(TOOLS):$(CURDIR)/$(BIN):$(PATH)

.PHONY: all run test lint format bench tools venv clean help

all: test

help:
	@echo "make run    - hookline dev on examples/ (embedded NATS, ingest :8080, demo receiver :8090)"
	@echo "make test   - all tests (installs the virtualenv and tool binaries first)"
	@echo "make lint   - ruff check and format check"
	@echo "make bench  - benchmarks; writes bench/report.md"
	@echo "make tools  - fetch helm, kubectl and promtool into $(TOOLS)"

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# The venv's own scripts, never `python -m` here: with the project root first on sys.path,
	@# the operator/ folder would shadow the standard library's operator module.
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

tools: $(TOOLS)/helm $(TOOLS)/kubectl $(TOOLS)/promtool

$(TOOLS)/helm $(TOOLS)/kubectl $(TOOLS)/promtool: hack/fetch_tools.py | $(STAMP)
	$(BIN)/python hack/fetch_tools.py

run: $(STAMP)
	$(BIN)/hookline dev --manifests examples --demo-receiver 127.0.0.1:8090

test: $(STAMP) tools
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .tools build *.egg-info

# hookline: two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TOOLS  := .tools/bin
STAMP  := $(VENV)/.installed
export PATH := $(CURDIR)/$(TOOLS):$(CURDIR)/$(BIN):$(PATH)
# make run: ingest's port, the demo receiver's HOST:PORT (the examples' host `demo-receiver` follows it),
# and the manifests (empty: the examples shipped with hookline, hookline/examples, linked as examples/).
PORT      ?= 8080
RECEIVER  ?= 127.0.0.1:8090
MANIFESTS ?=

.PHONY: all run test test-fast lint format bench tools k8s-assets venv ide clean help

all: test

help:
	@echo "make run    - hookline dev on examples/ (embedded NATS, ingest :8080, demo receiver :8090;"
	@echo "             PORT=8081 RECEIVER=127.0.0.1:9090 MANIFESTS=dir move or change them)"
	@echo "make test   - all tests, every tier (installs the virtualenv and tool binaries first)"
	@echo "make test-fast - the quick tiers a developer runs often (unit, and integration tests not marked slow)"
	@echo "make ide    - editable install as a link tree, so editors follow hookline.sender to sender/"
	@echo "make lint   - ruff check and format check"
	@echo "make bench  - benchmarks; writes bench/report.md"
	@echo "make tools  - fetch helm, kubectl and promtool into $(TOOLS)"
	@echo "make k8s-assets - unpack etcd, kube-apiserver, kube-controller-manager for tests/realapi into .tools/k8s"

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# The venv's own scripts, never `python -m` here: with the project root first on sys.path,
	@# the operator/ folder would shadow the standard library's operator module.
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

tools: $(TOOLS)/helm $(TOOLS)/kubectl $(TOOLS)/promtool

$(TOOLS)/helm $(TOOLS)/kubectl $(TOOLS)/promtool: hack/fetch_tools.py | $(STAMP)
	$(BIN)/python hack/fetch_tools.py

# The real control plane of tests/realapi, unpacked from ../shared/k8s-assets (or HOOKLINE_K8S_ASSETS, a
# folder of binaries, as envtest's KUBEBUILDER_ASSETS). Without either, that tier is deselected with a note.
k8s-assets: | $(STAMP)
	@$(BIN)/python tests/support/kubeassets.py unpack

run: $(STAMP)
	$(BIN)/hookline dev --port $(PORT) --demo-receiver $(RECEIVER) $(if $(MANIFESTS),--manifests $(MANIFESTS))

test: $(STAMP) tools k8s-assets
	$(BIN)/pytest

test-fast: $(STAMP) tools
	$(BIN)/pytest -m "(unit or integration) and not slow"

# The default editable install maps import names to folders with an import hook that editors and type
# checkers cannot follow; strict mode builds a tree of links (build/__editable__.*) that they can.
# Run it again after adding a module.
ide: $(STAMP)
	$(BIN)/pip install -q --no-deps -e . --config-settings editable_mode=strict

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

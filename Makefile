# kubelock — run `make help` for the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)/operator
# The control plane's binaries (built once into ~/.cache/kubelock, or taken from KUBELOCK_BIN_DIR).
BIN_DIR = $(shell bash hack/install-binaries.sh | tail -n 1)
PYTEST_ARGS ?=

.PHONY: help
help: ## Show this help (targets in colour on a terminal only)
	@if [ -t 1 ]; then on='\033[36m'; off='\033[0m'; else on=''; off=''; fi; \
	awk -v on="$$on" -v off="$$off" 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n\n"} \
	/^[a-zA-Z0-9_.-]+:.*?##/ { printf "  %s%-12s%s %s\n", on, $$1, off, $$2 }' $(MAKEFILE_LIST)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

.PHONY: venv
venv: $(VENV)/.installed ## Create the virtual environment with every dependency

.PHONY: tools
tools: ## Build (once) etcd, kube-apiserver and the other Kubernetes components, kwok and helm
	@bash hack/install-binaries.sh

.PHONY: generate
generate: venv tools ## Regenerate the CRDs, the chart's RBAC/admission templates and manifests/
	$(PY) -m kubelock.api.crdgen
	$(PY) hack/sync-chart.py
	HELM=$(BIN_DIR)/helm bash hack/render-manifests.sh

.PHONY: manifests
manifests: tools ## Render manifests/kubelock.yaml from the chart
	HELM=$(BIN_DIR)/helm bash hack/render-manifests.sh

.PHONY: verify
verify: venv tools ## Fail when generated files (CRDs, chart templates, manifests) differ from what is committed
	$(PY) -m kubelock.api.crdgen --check
	$(PY) hack/sync-chart.py --check
	HELM=$(BIN_DIR)/helm bash hack/render-manifests.sh --check

.PHONY: lint
lint: venv ## ruff, mypy --strict, the import-linter layer contracts and helm lint of the chart
	$(VENV)/bin/ruff check operator tests bench chaos
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy bench chaos
	$(VENV)/bin/lint-imports
	$(BIN_DIR)/helm lint --strict charts/kubelock

.PHONY: unit
unit: venv ## Unit tests only (no cluster)
	$(PY) -m pytest tests/unit -q $(PYTEST_ARGS)

.PHONY: test
test: venv tools node-tools ## Install everything and run all test tiers (unit, integration, e2e on a real node or kind)
	KUBELOCK_BIN_DIR=$(BIN_DIR) $(PY) -m pytest tests -q $(PYTEST_ARGS)

# OPERATOR=0: without the local operator process; NODE=1: with a real node (root, `make node-tools`);
# BARE=1: an empty cluster, without kubelock's CRDs, roles, admission policies and operator (to install it into);
# ETCD_MEMBERS=3: etcd as a cluster of that many members (1 to 7), as production control planes run it.
TESTBED_ARGS = $(if $(filter 0,$(OPERATOR)),--no-operator,) $(if $(filter-out 0,$(NODE)),--node,) \
  $(if $(filter-out 0,$(BARE)),--bare,) $(if $(ETCD_MEMBERS),--etcd-members '$(ETCD_MEMBERS)',)

.PHONY: run
run: venv tools ## Start a local control plane and run the operator in the foreground (Ctrl-C stops all)
	KUBELOCK_BIN_DIR=$(BIN_DIR) $(PY) -m kubelock.testbed run $(TESTBED_ARGS)

.PHONY: up
up: venv tools ## Start the local control plane and the operator in the background
	KUBELOCK_BIN_DIR=$(BIN_DIR) $(PY) -m kubelock.testbed up $(TESTBED_ARGS)

.PHONY: down
down: venv ## Stop what `make up` (or a `make run` of another terminal) started
	$(PY) -m kubelock.testbed down

.PHONY: bench
bench: venv tools ## Benchmarks against raw Lease operations in the same run (QUICK=1: under 3 minutes)
	KUBELOCK_BIN_DIR=$(BIN_DIR) $(PY) bench/run.py $(if $(filter-out 0,$(QUICK)),--quick,) $(BENCH_ARGS)

.PHONY: chaos
chaos: venv tools ## Fault injection with a checked history (QUICK=1: every fault twice, short; LOAD=1: loaded mode)
	KUBELOCK_BIN_DIR=$(BIN_DIR) $(PY) -m chaos.run $(if $(filter-out 0,$(QUICK)),--quick,) $(if $(filter-out 0,$(LOAD)),--load,) $(CHAOS_ARGS)

IMAGE ?= localhost/kubelock:dev
AGENT_IMAGE ?= localhost/kubelock-agent:dev

.PHONY: node-tools
node-tools: ## Install (as root, from Debian's packages) containerd, runc, CNI plugins, mmdebstrap for a real node
	@bash hack/install-node.sh

.PHONY: image
image: venv ## Build the operator and agent images (Docker where it runs, else daemonless into build/images/)
	@if docker info >/dev/null 2>&1; then \
	  docker build -t $(IMAGE) . && docker build --build-arg REQUIREMENT=. -t $(AGENT_IMAGE) . && \
	  docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' $(IMAGE) $(AGENT_IMAGE); \
	else \
	  $(MAKE) --no-print-directory node-tools && \
	  $(PY) -m kubelock.testbed.images --tag $(IMAGE) --agent-tag $(AGENT_IMAGE) --out build/images; \
	fi

.PHONY: e2e
e2e: venv tools node-tools ## End-to-end tests only (a real test-bed node; kind where Docker runs)
	KUBELOCK_BIN_DIR=$(BIN_DIR) $(PY) -m pytest tests/e2e -q

.PHONY: clean
clean: ## Remove the virtual environment and local run state (not the binary cache)
	rm -rf $(VENV) .run .mypy_cache .ruff_cache

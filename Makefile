# Palisade. Everything here runs as root on Debian (the lab makes network
# namespaces and runs Open vSwitch). `make demo` and `make test` are the two
# commands of the README.

SHELL      := /bin/bash
GO         ?= go
BIN        := $(CURDIR)/bin
K8S_BIN    := $(shell hack/bootstrap.sh --print-bin)
LAB_DIR    ?= /tmp/palisade-lab
GOTEST     := $(GO) test -count=1
VERSION    ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS    := -X palisade.dev/palisade/cmd/internal/version.Version=$(VERSION)
export PALISADE_K8S_BIN := $(K8S_BIN)
export PALISADE_BIN_DIR := $(BIN)

.PHONY: all bootstrap build manifests test test-unit test-integration e2e lab lab-down demo bench lint clean

all: build

## bootstrap: install Debian packages and build the pinned Kubernetes binaries (cached; idempotent)
bootstrap:
	@hack/bootstrap.sh

## build: build every binary into ./bin
build:
	@mkdir -p $(BIN)
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/...

## manifests: render build/yamls/palisade.yml from build/yamls/base and conf
manifests:
	$(GO) run ./hack/gen-manifests

## lint: gofmt and go vet
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags integration,e2e ./...

## test-unit: pure-logic tests (no root, no OVS), including the Dockerfiles' check
test-unit:
	$(GOTEST) ./...
	$(GO) -C build/images/check test -count=1 ./...

## test-integration: tests against a real OVS, real network namespaces (root)
test-integration: bootstrap build
	$(GOTEST) -tags integration -p 2 ./...

## e2e: the lab end to end: real apiserver, controller, agents, OVS, packets (root),
##      ending with a summary table. One case: make e2e RUN=TestNetpol/DefaultDenyIngress
##      (each /-separated part of RUN is matched exactly). PALISADE_E2E_NODES: lab nodes (3).
e2e: bootstrap build
	@set -o pipefail; run='$(RUN)'; \
	if [ -n "$$run" ]; then run=$$(sed -E 's#([^/]+)#^\1$$#g' <<<"$$run"); fi; \
	PALISADE_E2E_NODES='$(PALISADE_E2E_NODES)' $(GOTEST) -tags e2e -json -timeout 25m -run "$$run" ./test/e2e/ \
		| $(GO) run ./test/e2e/summary

## test: everything CI runs
test: bootstrap lint test-unit test-integration e2e

## lab: bring up a local lab cluster in $(LAB_DIR); `make lab-down` removes it
lab: bootstrap build
	$(BIN)/palisade-lab up --dir $(LAB_DIR) --bin-dir $(BIN) --k8s-bin-dir $(K8S_BIN)
	@$(BIN)/palisade-lab env --dir $(LAB_DIR)

lab-down:
	$(BIN)/palisade-lab down --dir $(LAB_DIR)

## demo: lab up, pods, reachability before/after a policy, lab down
demo: bootstrap build
	@hack/demo.sh

## bench: benchmarks (figures go to docs/benchmarks.md)
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

clean:
	rm -rf $(BIN)

# Trireme. `make demo` runs the main job on this machine; `make test` runs
# the tests. Both need Linux and root; missing Debian packages are
# installed by hack/install-deps.sh.

GO        ?= go
BIN       := bin
CACHE     := $(CURDIR)/.cache
TOOLS     := $(CACHE)/bin
PKGS      := ./...
FUZZTIME  ?= 10m
TEST_TIMEOUT ?= 30m
# The chaos and end-to-end suites start many processes, network namespaces
# and a control plane, and the security suite floods a running cluster:
# they run on their own, one after the other, after the other packages, so
# that no other test's mounts are copied into their namespaces and their
# timing does not compete with the rest.
SYSTEM_PKGS = ./test/e2e ./test/chaos ./test/security
UNIT_PKGS = $(shell $(GO) list ./... | grep -v -e /test/e2e -e /test/chaos -e /test/security)
# The race detector runs on every package but those that only drive built
# binaries.
RACE_PKGS = $(shell $(GO) list ./... | grep -v -e /pkg/demo -e /pkg/localcluster -e /test/bench -e /test/e2e -e /test/chaos -e /test/security)

VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS   := -X main.version=$(VERSION)

export GOBIN := $(TOOLS)
# The control plane, CSI sidecars and Helm that the end-to-end tests start,
# built by `make tools`; internal/kubetest finds them here.
export TRIREME_TOOLS ?= $(CACHE)/tools

.PHONY: all build deps tools test unit fuzz demo bench generate lint clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/trireme ./cmd/trireme

# image-binary builds the binary the Dockerfile puts in the image: static
# (no cgo) and reproducible (no paths, build id or VCS stamp in it), so two
# builds of one commit are byte-identical.
IMAGE_BINARY ?= $(BIN)/image/trireme
.PHONY: image-binary
image-binary:
	CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=false \
		-ldflags "-s -w -buildid= $(LDFLAGS)" -o $(IMAGE_BINARY) ./cmd/trireme

# manifests renders deploy/ from charts/trireme and copies deploy/crds into
# the chart; test/chart fails when they drift apart.
.PHONY: manifests
manifests:
	hack/render-manifests.sh

deps:
	@hack/install-deps.sh

# tools builds each tool that hack/tools/versions.env pins and is not built
# yet into $(TRIREME_TOOLS)/<name>-<version>/.
tools:
	hack/build-tools.sh

# test runs every test, including the fuzz targets' seed corpora and the
# tests that drive real NBD clients, fio, loop devices and mounts.
test: deps tools
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) $(UNIT_PKGS)
	$(GO) test -count=1 -p 1 -timeout $(TEST_TIMEOUT) $(SYSTEM_PKGS)
	$(GO) test -count=1 -race -timeout $(TEST_TIMEOUT) $(RACE_PKGS)

# fuzz runs each fuzz target for FUZZTIME.
fuzz:
	hack/fuzz.sh $(FUZZTIME)

# demo runs the main job: a controller and six node agents in three zones
# on this machine; a pod's volume loses its primary's whole zone while it
# writes, fails over, gets a replacement replica, and moves across zones.
demo: deps build
	$(BIN)/trireme local-cluster

bench: deps build
	$(GO) run ./test/bench --trireme $(BIN)/trireme --out docs/benchmarks.md

# chaos runs the fault-injection soak: CHAOS_SCHEDULES random schedules of
# kills, stops, cut links, lost zones and controller restarts while clients
# write; CHAOS_SEED=N replays from schedule N. make test runs 30.
CHAOS_SCHEDULES ?= 200
.PHONY: chaos failover-figures
chaos: deps build
	CHAOS_SCHEDULES=$(CHAOS_SCHEDULES) TRIREME_BINARY=$(abspath $(BIN))/trireme \
		$(GO) test -count=1 -timeout 6h -run 'TestChaos$$' -v ./test/chaos

# failover-figures measures failover, replacement, resync and rebuild
# (FIGURE_RUNS runs each) and writes them into docs/failover.md.
FIGURE_RUNS ?= 20
failover-figures: deps build
	TRIREME_FIGURES=$(CURDIR)/docs/failover.md FIGURE_RUNS=$(FIGURE_RUNS) TRIREME_BINARY=$(abspath $(BIN))/trireme \
		$(GO) test -count=1 -timeout 3h -run 'TestFigures$$' -v ./test/chaos

generate:
	hack/generate.sh

clean:
	rm -rf $(BIN)

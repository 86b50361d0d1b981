# warren: see README.md. `make test` is what CI runs.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# COLLECTOR_IMAGE, for a release: warren's collector image pinned by digest (docker build --target collector), the
# default --collector-image of the ephemeral and node modes.
COLLECTOR_IMAGE ?=
LDFLAGS   := -s -w -buildid= -X main.version=$(VERSION) -X github.com/warren-dev/warren/acquire.defaultCollectorImage=$(COLLECTOR_IMAGE)
BIN       := bin/warren
# The in-container collector, static for each node architecture; -trimpath and an empty build id make its digest
# a function of the source and VERSION alone (collector/build_test.go builds it twice and compares).
COLLECTOR_ARCHES  := amd64 arm64
COLLECTOR_DIR     ?= bin
COLLECTOR_LDFLAGS := -s -w -buildid= -X github.com/warren-dev/warren/collector.version=$(VERSION)

.PHONY: build collectors test test-short lint demo kube clean fuzz

build: collectors
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/warren

# collectors writes $(COLLECTOR_DIR)/warren-collector-linux-<arch>, which warren acquire streams into containers.
collectors:
	@for arch in $(COLLECTOR_ARCHES); do \
	  echo "CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags '$(COLLECTOR_LDFLAGS)' -o $(COLLECTOR_DIR)/warren-collector-linux-$$arch ./cmd/warren-collector"; \
	  CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags "$(COLLECTOR_LDFLAGS)" \
	    -o $(COLLECTOR_DIR)/warren-collector-linux-$$arch ./cmd/warren-collector || exit 1; \
	done

# kube builds (once, then cached) the real kube-apiserver and kubectl the end-to-end tests run against, the kubelet
# stand-in and its images (scripts/rootfs.sh, from Debian's packages), installs etcd from Debian when missing, helm
# (from the Go module proxy) for the chart tests, SeaweedFS (Go modules) for the object-storage tests, and Debian's
# containerd and runc for the volume-mode tests (internal/testenv/containerdtest).
kube:
	scripts/kube-bin.sh >/dev/null
	scripts/helm-bin.sh >/dev/null
	scripts/s3-bin.sh >/dev/null
	scripts/containerd-bin.sh >/dev/null

# The whole suite: unit tests, fuzz seeds, and the end-to-end tests against a real kube-apiserver.
test: kube lint
	$(GO) test -count=1 -timeout 20m ./...
	cd internal/testenv/k8s && $(GO) test -count=1 ./fakekubelet/...

# The long suite: exec sessions and port-forwards (client-go SPDY and WebSocket, kubectl) idle for 5 minutes
# (WARREN_E2E_IDLE=10m to change) must stay up and still work; 19,000 slow unauthenticated connections against the
# gateway's front door (its goroutines and memory in the log); and upstream yamux's own tests on warren's fork
# (tunnel/internal/yamux). About 8 minutes.
.PHONY: test-long
test-long: kube
	WARREN_E2E_LONG=1 $(GO) test -count=1 -v -parallel 8 -run Long -timeout 30m ./test/e2e
	WARREN_E2E_LONG=1 $(GO) test -count=1 -v -run Long -timeout 10m ./gateway
	WARREN_YAMUX_LONG=1 $(GO) test -count=1 -tags yamuxupstream ./tunnel/internal/yamux

# Without the end-to-end suite: no kube-apiserver needed.
test-short: lint
	$(GO) test -count=1 -short $$($(GO) list ./... | grep -v -e /test/e2e -e /internal/testenv/kubetest -e /test/helm)

# Each fuzz target for FUZZTIME (CI: 10s each); the seeds alone already run in `make test`.
FUZZTIME ?= 10s
fuzz:
	FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

lint:
	$(GO) vet ./...
	cd internal/testenv/k8s && $(GO) vet ./fakekubelet/... ./cmd/...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

demo: build kube
	scripts/demo.sh

clean:
	rm -rf bin .demo

# bench-acquire measures warren acquire against the real kube-apiserver and the kubelet stand-in: one 1 GiB target
# against a bulk GET of 1 GiB, the time to the first byte, 200 pods at --parallel 50 (~4 min).
.PHONY: bench-acquire
bench-acquire: kube
	$(GO) test ./test/e2e -run XXX -bench BenchmarkAcquire -benchtime 1x -count 1 -timeout 60m

# bench puts warren beside direct access, a reverse-proxy hop, ssh -R and rancher/remotedialer on this machine
# (bench/, its own module; installs openssh-server when missing; ~15 min). BENCH_FLAGS=-repeats=1 for a quick run.
.PHONY: bench
bench:
	bench/run.sh $(BENCH_FLAGS)

# warren: see README.md. `make test` is what CI runs.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
BIN       := bin/warren

.PHONY: build test test-short lint demo kube clean fuzz

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/warren

# kube builds (once, then cached) the real kube-apiserver and kubectl the end-to-end tests run against, installs
# etcd from Debian when missing, and helm (from the Go module proxy) for the chart tests.
kube:
	scripts/kube-bin.sh >/dev/null
	scripts/helm-bin.sh >/dev/null

# The whole suite: unit tests, fuzz seeds, and the end-to-end tests against a real kube-apiserver.
test: kube lint
	$(GO) test -count=1 -timeout 20m ./...
	cd test/k8s && $(GO) test -count=1 ./fakekubelet/...

# Without the end-to-end suite: no kube-apiserver needed.
test-short: lint
	$(GO) test -count=1 -short $$($(GO) list ./... | grep -v -e /test/e2e -e /internal/kubetest -e /test/helm)

# Each fuzz target for FUZZTIME (CI: 10s each); the seeds alone already run in `make test`.
FUZZTIME ?= 10s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzVerify$$' -fuzztime $(FUZZTIME) ./auth
	$(GO) test -run '^$$' -fuzz '^FuzzParseRule$$' -fuzztime $(FUZZTIME) ./auth
	$(GO) test -run '^$$' -fuzz '^FuzzClassify$$' -fuzztime $(FUZZTIME) ./auth
	$(GO) test -run '^$$' -fuzz '^FuzzVerify$$' -fuzztime $(FUZZTIME) ./audit

lint:
	$(GO) vet ./...
	cd test/k8s && $(GO) vet ./fakekubelet/... ./cmd/...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

demo: build kube
	scripts/demo.sh

clean:
	rm -rf bin .demo

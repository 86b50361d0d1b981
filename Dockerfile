# syntax=docker/dockerfile:1
# The warren binary (gateway and connector alike) in a static, non-root image, with the collectors beside it:
#   docker build -t ghcr.io/warren-dev/warren:$(git describe --tags --always) --build-arg VERSION=$(git describe --tags --always) .
# The collector image, the collector alone (what warren acquire's ephemeral and node modes run):
#   docker build --target collector -t ghcr.io/warren-dev/warren-collector:$VERSION --build-arg VERSION=$VERSION .
# A release builds and pushes the collector image first, then warren with its digest as the default --collector-image:
#   --build-arg COLLECTOR_IMAGE=ghcr.io/warren-dev/warren-collector@sha256:...
# Multi-platform: docker buildx build --platform linux/amd64,linux/arm64 ... (cross-compiled, no emulation).

# The builder runs on the build machine's platform and cross-compiles for the target's.
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
WORKDIR /src
# Dependencies first, so that they are cached across source changes.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG TARGETOS=linux
ARG TARGETARCH
ARG VERSION=dev
ARG COLLECTOR_IMAGE=
# The collectors for both node architectures, built as make build builds them (-trimpath, no build id), so that
# their digests are those of the examiner's own build: the collector's self-hash is checked against them.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    for arch in amd64 arm64; do \
      CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath \
        -ldflags "-s -w -buildid= -X github.com/warren-dev/warren/collector.version=$VERSION" \
        -o /out/warren-collector-linux-$arch ./cmd/warren-collector || exit 1; \
    done
# CGO_ENABLED=0: a static binary that needs no libc, for the distroless static image.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X main.version=$VERSION -X github.com/warren-dev/warren/acquire.defaultCollectorImage=$COLLECTOR_IMAGE" \
      -o /out/warren ./cmd/warren

# The collector image: the static collector alone, no shell, no libc, root (an ephemeral collector whose target's
# user the pod spec does not name starts as root and takes that user itself). Its entrypoint waits for the acquirer.
FROM scratch AS collector
ARG TARGETARCH
COPY --from=build /out/warren-collector-linux-${TARGETARCH} /warren-collector
ENTRYPOINT ["/warren-collector"]

# distroless/static: CA certificates, /etc/passwd with nonroot (65532), tzdata; no shell, no package manager.
# The default target, last: warren, and the collectors warren acquire looks for beside it (--collector-dir).
FROM gcr.io/distroless/static:nonroot
COPY --from=build /out/warren /warren
COPY --from=build /out/warren-collector-linux-amd64 /out/warren-collector-linux-arm64 /
USER 65532:65532
# The connector's health port and the gateway's HTTPS port (the charts' defaults).
EXPOSE 8080 8443
ENTRYPOINT ["/warren"]

# syntax=docker/dockerfile:1
# The warren binary (gateway and connector alike) in a static, non-root image:
#   docker build -t ghcr.io/warren-dev/warren:$(git describe --tags --always) --build-arg VERSION=$(git describe --tags --always) .
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
# CGO_ENABLED=0: a static binary that needs no libc, for the distroless static image.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X main.version=$VERSION" -o /out/warren ./cmd/warren

# distroless/static: CA certificates, /etc/passwd with nonroot (65532), tzdata; no shell, no package manager.
FROM gcr.io/distroless/static:nonroot
COPY --from=build /out/warren /warren
USER 65532:65532
# The connector's health port and the gateway's HTTPS port (the charts' defaults).
EXPOSE 8080 8443
ENTRYPOINT ["/warren"]

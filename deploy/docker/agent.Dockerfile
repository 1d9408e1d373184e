# syntax=docker/dockerfile:1
# The Tether agent's image: a static binary on distroless "static" (no shell, no
# package manager, no libc), run as the non-root user 65532. Build from the
# repository's root:
#
#   docker build -f deploy/docker/agent.Dockerfile --build-arg VERSION=$(git describe --tags --always) -t tether-agent .
#
# Production pins both base images by digest (docs/operations.md, "Container images").

ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# ts_omit_peerapiserver: no PeerAPI listener on the tailnet.
RUN CGO_ENABLED=0 go build -trimpath -tags ts_omit_peerapiserver \
    -ldflags "-s -w -X github.com/tetherhq/tether/internal/version.Version=${VERSION}" \
    -o /out/agent ./cmd/agent

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/agent /agent
ENV TS_NO_LOGS_NO_SUPPORT=true
USER 65532:65532
ENTRYPOINT ["/agent"]

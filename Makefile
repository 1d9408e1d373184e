# Tether — see README.md. Two commands matter: `make run` and `make test`.

GO        ?= go
TAGS      := ts_omit_peerapiserver
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X github.com/tetherhq/tether/internal/version.Version=$(VERSION)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

export TS_NO_LOGS_NO_SUPPORT := true

.PHONY: build run test deps lint bench fuzz clean images

## build: bin/broker and bin/agent (production: no PeerAPI listener, no dev or test code) and bin/broker-dev (the dev build: adds serve --dev)
build:
	$(GO) build -trimpath -tags $(TAGS) -ldflags '$(LDFLAGS)' -o bin/ ./cmd/broker ./cmd/broker-dev ./cmd/agent

## run: dev broker (bin/broker-dev) + one paired agent, state under ./.tether-dev/
run: build
	scripts/dev-run.sh

## deps: install what the tests need (Debian packages, when root)
deps:
	scripts/install-deps.sh

## test: every test, including the end-to-end ones over a real dev tailnet
test: deps
	$(GO) vet -tags $(TAGS) ./...
	$(GO) test -tags $(TAGS) -timeout 15m ./...
	cd deploy && $(GO) vet ./... && $(GO) test -timeout 10m ./...

## images: the agent's and broker's container images (docker with BuildKit; deploy/docker)
IMAGE_REPO ?= ghcr.io/tetherhq
images:
	docker build -f deploy/docker/agent.Dockerfile --build-arg VERSION=$(VERSION) -t $(IMAGE_REPO)/tether-agent:$(VERSION) .
	docker build -f deploy/docker/broker.Dockerfile --build-arg VERSION=$(VERSION) -t $(IMAGE_REPO)/tether-broker:$(VERSION) .

## lint: formatting, vet and staticcheck
lint:
	@out=$$(gofmt -l . 2>&1); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet -tags $(TAGS) ./...
	$(GO) run $(STATICCHECK) -tags $(TAGS) ./...

## bench: the Go benchmarks, including start-up, pairing and heartbeat figures, and one broker holding 2,000 simulated agents (internal/agentload; TETHER_AGENTLOAD_AGENTS, _HOLD, _HB change the run)
bench: deps
	$(GO) test -tags $(TAGS) -run '^$$' -bench . -benchtime 3s -timeout 30m ./...

## fuzz: long fuzzing runs of every parser (seed corpora run in make test)
FUZZTIME ?= 60s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzVerify$$' -fuzztime $(FUZZTIME) ./audit
	$(GO) test -run '^$$' -fuzz '^FuzzScanEvent$$' -fuzztime $(FUZZTIME) ./audit
	$(GO) test -run '^$$' -fuzz '^FuzzParseURL$$' -fuzztime $(FUZZTIME) ./internal/s3export
	$(GO) test -run '^$$' -fuzz '^FuzzCheck$$' -fuzztime $(FUZZTIME) ./internal/sqlguard
	$(GO) test -run '^$$' -fuzz '^FuzzCheck$$' -fuzztime $(FUZZTIME) ./internal/promguard
	$(GO) test -run '^$$' -fuzz '^FuzzRewrite$$' -fuzztime $(FUZZTIME) ./internal/promguard
	$(GO) test -run '^$$' -fuzz '^FuzzVerify$$' -fuzztime $(FUZZTIME) ./internal/grant

clean:
	rm -rf bin

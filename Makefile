# CML Cloud Manager. "make run" builds and serves; "make test" lints and runs
# every test (needs PostgreSQL, see README.md).

BIN     := bin/cml-cloud-manager
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)

# staticcheck is installed into ./bin from the Go module proxy, pinned.
STATICCHECK_VERSION := v0.8.2
STATICCHECK         := bin/staticcheck

.DEFAULT_GOAL := build
.PHONY: run test lint build migrate bench clean staticcheck

## build: compile bin/cml-cloud-manager with the version and commit stamped in
build:
	go build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/cml-cloud-manager

## run: build, then serve (creates and migrates the database itself)
run: build
	./$(BIN) serve

## migrate: build, then create the database if missing and apply migrations
migrate: build
	./$(BIN) migrate

## lint: gofmt, go vet and staticcheck must all be clean
lint: staticcheck
	@unformatted="$$(gofmt -l .)"; \
	if [ -n "$$unformatted" ]; then echo "gofmt -l lists files that need formatting:"; echo "$$unformatted"; exit 1; fi
	go vet ./...
	$(STATICCHECK) ./...

## test: lint, then every test with the race detector, then every benchmark
## once (a smoke run: benchmarks must keep working; figures come from make bench)
test: lint
	go test -race -count=1 ./...
	go test -run '^$$' -bench . -benchtime 1x ./...

## bench: every benchmark, no tests
bench:
	go test -run '^$$' -bench . -benchmem ./...

## clean: remove build output
clean:
	rm -rf bin

# Install the pinned staticcheck unless bin/staticcheck already is that version.
staticcheck:
	@if ! $(STATICCHECK) -version 2>/dev/null | grep -qF '($(STATICCHECK_VERSION:v%=%))'; then \
		echo "installing staticcheck $(STATICCHECK_VERSION) into bin/"; \
		GOBIN="$(CURDIR)/bin" go install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION); \
	fi

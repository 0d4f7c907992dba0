# berth — make help lists the targets.
SHELL := /bin/bash
GO ?= go
STATICCHECK_VERSION ?= v0.8.2
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
BUILD_TIME ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS := -X github.com/berth-ci/berth/internal/buildinfo.Version=$(VERSION) \
	-X github.com/berth-ci/berth/internal/buildinfo.Commit=$(COMMIT) \
	-X github.com/berth-ci/berth/internal/buildinfo.BuildTime=$(BUILD_TIME)

.PHONY: help tools build demo test lint vet fmt-check staticcheck unit alerts-test fuzz bench bench-matrix clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

tools: ## install the linters the tests use (staticcheck 2026.2.2 is module version v0.8.2)
	$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

build: ## build bin/berth with version information
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/berth ./cmd/berth

demo: ## run a throw-away broker with demo pools on 127.0.0.1:7420
	$(GO) run ./cmd/berth serve --demo

test: lint alerts-test unit fuzz ## everything CI checks: formatting, vet, staticcheck, alert rules, all tests with the race detector, a short fuzz

# The PostgreSQL tests run against BERTH_TEST_POSTGRES. Unset, it defaults
# to the local server below if one answers on its port; without one those
# tests skip (and say how to enable them), except under CI=true, where a
# skipped PostgreSQL test fails the run.
PG_TEST_DEFAULT := postgres://postgres@127.0.0.1:5432/test

# The tests that drive the Boskos-compatible API with the real Boskos Go
# client: a module of their own, so that the client's many dependencies
# never become berth's.
BOSKOS_TESTS := internal/e2e/boskosclient

unit: ## all tests with the race detector (PostgreSQL ones too, see BERTH_TEST_POSTGRES)
	@if [ -z "$$BERTH_TEST_POSTGRES" ] && (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then \
		export BERTH_TEST_POSTGRES=$(PG_TEST_DEFAULT); echo "PostgreSQL tests: $$BERTH_TEST_POSTGRES"; \
	elif [ -n "$$BERTH_TEST_POSTGRES" ]; then echo "PostgreSQL tests: BERTH_TEST_POSTGRES"; \
	else echo "PostgreSQL tests: SKIPPED (no BERTH_TEST_POSTGRES and nothing on 127.0.0.1:5432); set BERTH_TEST_POSTGRES=postgres://USER@HOST:PORT/DB to run them"; fi; \
	$(GO) test -race -count=1 ./... && \
	cd $(BOSKOS_TESTS) && $(GO) test -race -count=1 ./...

# promtool comes with Debian's prometheus package (.ci/run installs it).
alerts-test: ## check the shipped alert rules and run their unit tests with promtool
	@command -v promtool >/dev/null || { echo "alerts-test needs promtool: apt-get install --no-install-recommends prometheus"; exit 1; }
	promtool check rules deploy/prometheus/alerts.yaml
	promtool test rules deploy/prometheus/alerts_test.yaml

# Each fuzz target runs for FUZZTIME (CI: 10s each; longer runs, with
# their figures, are in BENCHMARKS.md). A failing input is written under
# the package's testdata/fuzz, where it stays as a regression test.
FUZZTIME ?= 10s
FUZZ_TARGETS := internal/api:FuzzNativeAPI internal/api:FuzzBoskosAPI internal/config:FuzzParse internal/config:FuzzParseBoskos

fuzz: ## run every fuzz target for FUZZTIME
	@set -e; for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "fuzz $$fn ($(FUZZTIME))"; $(GO) test ./$$pkg -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME); done

lint: fmt-check vet staticcheck ## gofmt, go vet and staticcheck

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt wants to rewrite:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...
	cd $(BOSKOS_TESTS) && $(GO) vet ./...

staticcheck:
	@PATH="$$PATH:$$($(GO) env GOPATH)/bin"; command -v staticcheck >/dev/null || $(MAKE) tools
	PATH="$$PATH:$$($(GO) env GOPATH)/bin" staticcheck ./...
	cd $(BOSKOS_TESTS) && PATH="$$PATH:$$($(GO) env GOPATH)/bin" staticcheck ./...

bench: ## Go benchmarks of the store and the API
	$(GO) test -run '^$$' -bench . -benchtime 2s ./internal/store/sqlite/ ./internal/api/

bench-matrix: build ## berth bench against a real server: pools of 100, 10k, 100k at concurrency 1, 16, 64, and handoff
	./scripts/bench-matrix.sh bin/berth

clean: ## remove build output
	rm -rf bin

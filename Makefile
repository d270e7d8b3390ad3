# pme2go-backup — build, test, bench, demo, package.
# `make demo` and `make test` install what is missing (PostgreSQL, xz, zstd)
# through tests/install-deps.sh before they run.

GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo 0.1.0-dev)
LDFLAGS  := -X github.com/pme2go/pme2go-backup/engine/version.Version=$(VERSION)
BIN      := bin
TEST_TIMEOUT ?= 25m

.PHONY: all build deps test test-race fuzz test-short bench demo lint fmt clean package system-test

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/pme2go-backup ./cmd/pme2go-backup
	$(if $(wildcard cmd/pme2go-backupd/*.go),$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/pme2go-backupd ./cmd/pme2go-backupd)

deps:
	bash tests/install-deps.sh

# The whole suite. The engine and CLI packages (no PostgreSQL) run with the
# race detector; each fuzz target of archive, change-set and LSN reading runs
# for its number of executions from its committed seed corpus (counts, not
# durations: a duration races Go's fuzzing coordinator, golang/go#75804, and
# fails spuriously with "context deadline exceeded" under load; FUZZTIME=10s
# overrides every count); then the tests against real
# PostgreSQL. Set PME2GO_TEST_REQUIRE=all to make missing tools fail instead
# of skip (as .ci/run does).
FUZZTIME ?=
FUZZ_TARGETS := engine/archive:FuzzArchive:5000x engine/archive:FuzzManifest:100000x \
	engine/archive:FuzzCleanMemberName:100000x engine/changeset:FuzzReader:120000x engine/lsn:FuzzParse:300000x
test: deps lint build test-race fuzz
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) $$($(GO) list ./... | grep -v -e '/engine/' -e '/cmd/')

test-race:
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./engine/... ./cmd/...

fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; rest=$${t#*:}; fn=$${rest%%:*}; n=$${rest#*:}; ft=$${FUZZTIME:-$$n}; \
		echo "fuzz $$fn ($$pkg) for $$ft"; \
		$(GO) test -count=1 -run '^$$' -fuzz "^$$fn\$$" -fuzztime $$ft -fuzzminimizetime 0s ./$$pkg/ || exit 1; \
	done

test-short:
	$(GO) test -count=1 -short ./...

# Benchmarks (tests/bench), each measured against the obvious alternative in
# the same run: full backup against pg_dump -Fc and pg_dump -Fd -j<cores>,
# restore against pg_restore -j<cores> of the same data (BENCH_MB sets the
# database size, default 500); capture under pgbench at full rate; replay
# against the source's write rate (BENCH_SECONDS of pgbench, default 30);
# off-site copies to a local S3 server against BACKUP_DIR writes
# (BENCH_OFFSITE_MB, default 256).
# docs/benchmarks.md records the figures with the command that made them.
bench: deps build
	BENCH_MB=$${BENCH_MB:-500} $(GO) test -count=1 -run '^$$' -bench . -benchtime 1x -timeout 90m ./tests/bench/

demo: deps build
	bash tests/demo.sh

# deb and rpm packages in $(BIN)/packages, built by a pinned nfpm installed in
# $(BIN)/tools (newer nfpm releases do not build here).
NFPM_VERSION := v2.45.2
NFPM := $(BIN)/tools/nfpm-$(NFPM_VERSION)

$(NFPM):
	GOBIN=$(CURDIR)/$(BIN)/tools $(GO) install github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION)
	mv $(BIN)/tools/nfpm $@

package: $(NFPM)
	GO='$(GO)' LDFLAGS='$(LDFLAGS)' bash packaging/build-packages.sh $(NFPM) $(BIN)/packages

# The packages installed into a booted Debian root file system (systemd-nspawn);
# see tests/system. Run by .ci/run after make test.
system-test: deps package
	PME2GO_SYSTEM_TEST=1 $(GO) test -count=1 -timeout 30m -v ./tests/system/

# gofmt, go vet, and the layering check of DESIGN.md (tests/layering): engine
# never imports cmd, daemon or dbusapi; outside engine only engine/ops and its
# types are imported.
lint:
	@if git grep -nE '^(<<<<<<<|>>>>>>>)( |$$)' -- . ':!*.tar*' 2>/dev/null; then echo "merge conflict markers left in the files above"; exit 1; fi
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "not gofmt-formatted:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) test -count=1 ./tests/layering/

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN)

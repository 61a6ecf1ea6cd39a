# fwproxy — see README.md. Every target works on a fresh machine: `make test`
# installs the Debian packages the tests need when they are missing.

# bash: make fuzz needs pipefail.
SHELL    := /bin/bash
GO       ?= go
BIN      := bin
FUZZTIME ?= 30s
# Every fuzz target, as package:FuzzName.
FUZZ_TARGETS := ./proxy:FuzzParseRequest ./proxy:FuzzParseUDPHeader ./proxy:FuzzReadUserPass ./proxy:FuzzReadProxyHeader \
	./mmsfilter:FuzzMMSFrame ./mmsfilter:FuzzFunnelString ./mmsfilter:FuzzRewrite ./mmsfilter:FuzzStream ./mmsfilter:FuzzLogging \
	./mmsfilter:FuzzParseRedirect ./internal/linefilter:FuzzParsePortLine \
	./leases:FuzzLeaseOps ./cmd/fwproxy:FuzzDecodeYAML \
	./internal/udpio:FuzzParseRawSockaddr ./internal/udpio:FuzzPutRawSockaddr ./internal/udpio:FuzzWriteRead \
	./e2e/asf:FuzzParseHeader ./internal/socksclient:FuzzParseUDPHeader ./internal/socksclient:FuzzReadReply \
	./rtspfilter:FuzzReadHead ./rtspfilter:FuzzParseTransport ./rtspfilter:FuzzRewriteTransport ./rtspfilter:FuzzRelay \
	./cmd/connect-min:FuzzParseRequest

.PHONY: all build static install run test test-deps fuzz bench bench-deps lint clean

# Installation paths (make install PREFIX=/usr DESTDIR=/tmp/pkg).
PREFIX      ?= /usr/local
BINDIR      ?= $(PREFIX)/bin
SYSCONFDIR  ?= /etc
UNITDIR     ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
DOCDIR      ?= $(PREFIX)/share/doc/fwproxy

# The version fwproxy -version and fwproxy_build_info report. Without git (a
# source archive) they are left empty and the binary finds its own
# (cmd/fwproxy/version.go).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS := $(if $(VERSION),-X main.version=$(VERSION)) $(if $(COMMIT),-X main.commit=$(COMMIT))

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/fwproxy ./cmd/fwproxy

## static: bin/fwproxy linked statically (no cgo: the pure-Go resolver reads
## /etc/hosts and /etc/resolv.conf itself), to copy to any Linux host.
static:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/fwproxy ./cmd/fwproxy

## install (STATIC=1: the static build): the binary, the systemd unit and its sysusers.d user, the README,
## and the example configuration as $(SYSCONFDIR)/fwproxy/config.yaml unless
## one is there already (the example is always installed beside it).
install: $(if $(STATIC),static,build)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(DOCDIR) $(DESTDIR)$(SYSCONFDIR)/fwproxy
	install -m 0755 $(BIN)/fwproxy $(DESTDIR)$(BINDIR)/fwproxy
	sed -e 's#/usr/local/bin#$(BINDIR)#g' -e 's#/etc/fwproxy#$(SYSCONFDIR)/fwproxy#g' -e 's#/usr/local/share/doc/fwproxy#$(DOCDIR)#g' \
		cmd/fwproxy/fwproxy.service > $(DESTDIR)$(UNITDIR)/fwproxy.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/fwproxy.service
	install -m 0644 cmd/fwproxy/fwproxy.sysusers $(DESTDIR)$(SYSUSERSDIR)/fwproxy.conf
	install -m 0644 README.md CHANGELOG.md LICENSE $(DESTDIR)$(DOCDIR)/
	sed -e 's#/etc/fwproxy#$(SYSCONFDIR)/fwproxy#g' cmd/fwproxy/config.example.yaml > $(DESTDIR)$(SYSCONFDIR)/fwproxy/config.example.yaml
	chmod 0644 $(DESTDIR)$(SYSCONFDIR)/fwproxy/config.example.yaml
	[ -e $(DESTDIR)$(SYSCONFDIR)/fwproxy/config.yaml ] || cp -p $(DESTDIR)$(SYSCONFDIR)/fwproxy/config.example.yaml $(DESTDIR)$(SYSCONFDIR)/fwproxy/config.yaml

## run: the proxy with the built-in default configuration (SOCKS5 on
## 127.0.0.1:1080, metrics on 127.0.0.1:9480, no authentication).
run: build
	./$(BIN)/fwproxy

## test: the whole suite under the race detector, e2e included.
test: test-deps
	$(GO) mod download
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...

test-deps:
	@e2e/install-deps.sh

## fuzz: run every fuzz target for FUZZTIME and keep what the fuzzer found
## in the package's testdata/fuzz, where `make test` replays it.
## A red run always means a crasher: a target fails when `go test` wrote a
## reproducer into testdata/fuzz/<Target>, or failed for any other reason
## than Go's coordinator race at the end of a -fuzztime duration
## (golang/go#75804: "context deadline exceeded" and no reproducer), which
## is reported and ignored.
fuzz:
	@set -eo pipefail; cache=$$($(GO) env GOCACHE)/fuzz/fwproxy; log=$$(mktemp); mark=$$(mktemp); \
	trap 'rm -f "$$log" "$$mark"' EXIT; \
	for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; dir=$$pkg/testdata/fuzz/$$name; \
		mkdir -p $$dir; touch "$$mark"; \
		echo "fuzz $$pkg $$name for $(FUZZTIME)"; \
		if ! $(GO) test -run='^$$' -fuzz="^$$name\$$" -fuzztime=$(FUZZTIME) $$pkg 2>&1 | tee "$$log"; then \
			new=$$(find $$dir -type f -newer "$$mark"); \
			if [ -n "$$new" ] || ! grep -q 'context deadline exceeded' "$$log"; then \
				echo "fuzz $$name: FAILED; reproducer: $${new:-none written}"; exit 1; \
			fi; \
			echo "fuzz $$name: no reproducer written; Go's fuzz coordinator race at the end of -fuzztime (golang/go#75804), not a crasher"; \
		fi; \
		if [ -d "$$cache/$${pkg#./}/$$name" ]; then cp -n "$$cache/$${pkg#./}/$$name"/* $$dir/ 2>/dev/null || true; fi; \
	done

## bench: fwbench measures direct loopback, fwproxy and (when installed,
## see bench-deps) Dante's danted and microsocks side by side in one run:
## CONNECT and bulk also beside the minimal CONNECT server bin/connect-min
## in both its modes (the Go runtime's floor), the streaming step-up beside
## the minimal relay bin/udprelay-min; it prints each figure with fwproxy's
## ratios (BENCHMARKS.md). Then the Go benchmarks, each with its ratio to a
## baseline measured in the same run. BENCH_DURATION is each run's
## measuring time per system (three runs per figure); DANTED and MICROSOCKS
## are the peers' paths (empty: measure without); BENCH_FLAGS are more
## fwbench flags (-only, -baseline, …).
BENCH_DURATION ?= 1s
DANTED         ?= /usr/sbin/danted
MICROSOCKS     ?= /usr/bin/microsocks
BENCH_FLAGS    ?=
bench: build
	$(GO) build -o $(BIN)/fwbench ./cmd/fwbench
	$(GO) build -o $(BIN)/udprelay-min ./cmd/udprelay-min
	$(GO) build -o $(BIN)/connect-min ./cmd/connect-min
	./$(BIN)/fwbench -fwproxy $(BIN)/fwproxy -danted "$(DANTED)" -microsocks "$(MICROSOCKS)" -relay $(BIN)/udprelay-min \
		-connect-min $(BIN)/connect-min \
		-duration $(BENCH_DURATION) -markdown $(BIN)/bench.md $(BENCH_FLAGS)
	$(GO) test -run='^$$' -bench=. -benchmem -count=1 ./...

## bench-deps: installs Dante's server and microsocks for make bench to
## compare with. Dante's own service is stopped and disabled: fwbench runs
## danted (and microsocks) itself, on loopback, only while it measures.
bench-deps:
	@if [ ! -x /usr/sbin/danted ] || [ ! -x /usr/bin/microsocks ]; then \
		sudo=; [ "$$(id -u)" -ne 0 ] && sudo=sudo; \
		export DEBIAN_FRONTEND=noninteractive; \
		$$sudo apt-get update -qq && \
		$$sudo apt-get install -y -qq --no-install-recommends dante-server microsocks >/dev/null; \
		if command -v systemctl >/dev/null 2>&1; then $$sudo systemctl disable --now danted >/dev/null 2>&1 || true; fi; \
	fi
	@/usr/sbin/danted -v | head -1
	@echo "microsocks $$(dpkg-query -W -f='$${Version}' microsocks 2>/dev/null)"

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf $(BIN)

## demo: the emulated media server, fwproxy and a few emulated players
## (firewall clients rebinding at every playlist entry, a SOCKS player, an
## MMST player, and two RTSP players against gortsplib's server), with
## lingering leases and then with -lease-linger 0; prints a summary table.
.PHONY: demo
demo: build
	$(GO) run ./cmd/mmsdemo -fwproxy $(BIN)/fwproxy

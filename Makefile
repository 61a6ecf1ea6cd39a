# fwproxy — see README.md. Every target works on a fresh machine: `make test`
# installs the Debian packages the tests need when they are missing.

GO       ?= go
BIN      := bin
FUZZTIME ?= 30s
# Every fuzz target, as package:FuzzName.
FUZZ_TARGETS := ./proxy:FuzzParseRequest ./proxy:FuzzParseUDPHeader \
	./mmsfilter:FuzzMMSFrame ./mmsfilter:FuzzFunnelString ./mmsfilter:FuzzRewrite ./mmsfilter:FuzzStream \
	./leases:FuzzLeaseOps \
	./internal/udpio:FuzzParseRawSockaddr ./internal/udpio:FuzzPutRawSockaddr ./internal/udpio:FuzzWriteRead \
	./e2e/asf:FuzzParseHeader ./e2e/mmsplayer:FuzzParseUDPHeader

.PHONY: all build run test test-deps fuzz bench bench-deps lint clean

all: build

build:
	$(GO) build -o $(BIN)/fwproxy ./cmd/fwproxy

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
fuzz:
	@set -e; cache=$$($(GO) env GOCACHE)/fuzz/fwproxy; \
	for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name for $(FUZZTIME)"; \
		$(GO) test -run='^$$' -fuzz="^$$name\$$" -fuzztime=$(FUZZTIME) $$pkg; \
		mkdir -p $$pkg/testdata/fuzz/$$name; \
		if [ -d "$$cache/$${pkg#./}/$$name" ]; then cp -n "$$cache/$${pkg#./}/$$name"/* $$pkg/testdata/fuzz/$$name/ 2>/dev/null || true; fi; \
	done

## bench: fwbench measures direct loopback, fwproxy and (when installed,
## see bench-deps) Dante's danted side by side in one run and prints each
## figure with fwproxy's ratios (BENCHMARKS.md); then the Go benchmarks,
## each with its ratio to a baseline measured in the same run.
## BENCH_DURATION is each run's measuring time per system (three runs per
## figure); DANTED is danted's path (empty: measure without it).
BENCH_DURATION ?= 1s
DANTED         ?= /usr/sbin/danted
bench: build
	$(GO) build -o $(BIN)/fwbench ./cmd/fwbench
	./$(BIN)/fwbench -fwproxy $(BIN)/fwproxy -danted "$(DANTED)" -duration $(BENCH_DURATION) -markdown $(BIN)/bench.md
	$(GO) test -run='^$$' -bench=. -benchmem -count=1 ./...

## bench-deps: installs Dante's server for make bench to compare with. The
## package's own service is stopped and disabled: fwbench runs danted
## itself, on loopback, only while it measures.
bench-deps:
	@if [ ! -x /usr/sbin/danted ]; then \
		sudo=; [ "$$(id -u)" -ne 0 ] && sudo=sudo; \
		export DEBIAN_FRONTEND=noninteractive; \
		$$sudo apt-get update -qq && \
		$$sudo apt-get install -y -qq --no-install-recommends dante-server >/dev/null; \
		if command -v systemctl >/dev/null 2>&1; then $$sudo systemctl disable --now danted >/dev/null 2>&1 || true; fi; \
	fi
	@/usr/sbin/danted -v | head -1

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf $(BIN)

## demo: the emulated media server, fwproxy and a few emulated players
## (firewall clients rebinding at every playlist entry, a SOCKS player, an
## MMST player), with lingering leases and then with -lease-linger 0;
## prints a summary table.
.PHONY: demo
demo: build
	$(GO) run ./cmd/mmsdemo -fwproxy $(BIN)/fwproxy

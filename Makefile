# pop3bridge — the one build entry.  GNU make; every library through pkg-config.
#
#   make            build/pop3bridge
#   make test       installs what is missing (make deps), builds, then every suite: unit
#                   tests (plain and ASan+UBSan), fuzz smoke run, integration tests
#   make deps       install every Debian package the build, tests, demo and bench need
#   make fuzz       build and run the libFuzzer targets (FUZZ_SECONDS each, default 60)
#   make bench      installs what is missing (make deps), builds, benchmarks (tests/bench/)
#   make soak       installs what is missing, builds, then the soak test for SOAK_SECONDS
#                   (default 600; make test runs it for 60 s): every fault at once
#   make soak-pg    the same first steps, then the PostgreSQL failover test at the issue's
#                   size (PG_FAILOVER_SIZE, default 50x20; make test runs it at 10x8)
#   make clean

CC      ?= cc
ifeq ($(origin CC),default)
CC := cc
endif
BUILD   ?= build
PKGS    := openssl libcurl libmicrohttpd libcjson sqlite3 libpq gmime-3.0 libgsasl libsystemd libpcre2-8
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread -lm
CMOCKA_LIBS := $(shell pkg-config --libs cmocka 2>/dev/null)

OPT     ?= -O2 -g
SAN     ?=
WARN    := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wno-format-nonliteral
ALL_CFLAGS := -std=c11 -D_GNU_SOURCE $(WARN) $(OPT) $(SAN) -Iinclude $(PKG_CFLAGS) $(CFLAGS)
ALL_LDFLAGS := $(SAN) $(LDFLAGS)

VERSION := $(shell cat VERSION 2>/dev/null || echo 0.0.0)
ALL_CFLAGS += -DPOP3BRIDGE_VERSION='"$(VERSION)"'

SRCS      := $(wildcard bridge/*.c)
LIB_SRCS  := $(filter-out bridge/main.c,$(SRCS))
LIB_OBJS  := $(LIB_SRCS:bridge/%.c=$(BUILD)/obj/%.o)
LIB       := $(BUILD)/libpop3bridge.a
BIN       := $(BUILD)/pop3bridge
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)
TOOL_SRCS := $(wildcard tests/tools/*.c)
TOOL_BINS := $(TOOL_SRCS:tests/tools/%.c=$(BUILD)/tools/%)
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)

.PHONY: deb deb-lint
.PHONY: all build-all test unit unit-asan integration-asan fuzz fuzz-smoke integration bench soak soak-pg deps clean demo tools check-clang install
all: $(BIN)

$(BUILD)/obj/%.o: bridge/%.c $(wildcard include/*.h) | $(BUILD)/obj
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(LIB): $(LIB_OBJS)
	rm -f $@
	ar rcs $@ $^

$(BIN): $(BUILD)/obj/main.o $(LIB)
	$(CC) $(ALL_LDFLAGS) -o $@ $(BUILD)/obj/main.o $(LIB) $(PKG_LIBS)

$(BUILD)/tests/%: tests/unit/%.c $(LIB) $(wildcard tests/unit/*.h) | $(BUILD)/tests
	$(CC) $(ALL_CFLAGS) -Itests/unit -o $@ $< $(LIB) $(PKG_LIBS) $(CMOCKA_LIBS) $(ALL_LDFLAGS)

$(BUILD)/tools/%: tests/tools/%.c $(LIB) | $(BUILD)/tools
	$(CC) $(ALL_CFLAGS) -o $@ $< $(LIB) $(PKG_LIBS) $(ALL_LDFLAGS)

$(BUILD)/obj $(BUILD)/tests $(BUILD)/tools:
	mkdir -p $@

tools: $(TOOL_BINS)

# the binary and the tools (quiet when both are up to date)
build-all: all tools
	@:

-include $(wildcard $(BUILD)/obj/*.d)

# ---- tests -----------------------------------------------------------------
unit: $(UNIT_BINS) tools
	@tests/run-unit $(UNIT_BINS)

unit-asan:
	$(MAKE) --no-print-directory BUILD=build/asan OPT="-O1 -g" SAN="$(ASAN_SAN)" unit

FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 10
fuzz:
	$(MAKE) --no-print-directory CC=clang BUILD=build/fuzz OPT="-O1 -g" \
	    SAN="-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer" fuzz-build
	@tests/run-fuzz build/fuzz $(FUZZ_SECONDS)

fuzz-smoke:
	$(MAKE) --no-print-directory CC=clang BUILD=build/fuzz OPT="-O1 -g" \
	    SAN="-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer" fuzz-build
	@tests/run-fuzz build/fuzz $(FUZZ_SMOKE_SECONDS)

FUZZ_BINS := $(FUZZ_SRCS:tests/fuzz/%.c=$(BUILD)/fuzzers/%)
fuzz-build: $(FUZZ_BINS)
$(BUILD)/fuzzers/%: tests/fuzz/%.c $(LIB)
	@mkdir -p $(BUILD)/fuzzers
	$(CC) $(ALL_CFLAGS) -fsanitize=fuzzer -o $@ $< $(LIB) $(PKG_LIBS)

integration: $(BIN) tools
	@tests/integration/run

# the CLI and engine under ASan+UBSan, against the same real and scripted servers
ASAN_SAN := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
integration-asan:
	$(MAKE) --no-print-directory BUILD=build/asan OPT="-O1 -g" SAN="$(ASAN_SAN)" build/asan/pop3bridge
	@POP3BRIDGE=build/asan/pop3bridge SUITE_TAG=-asan tests/integration/run test_pop3_cli test_pop3_scripted test_bridge \
	    'test_oauth2::*login*' 'test_oauth2::*client_credentials*' 'test_oauth2::*wrong*' 'test_oauth2::*revocation*' \
	    test_pg -k 'not refresh_each_oauth2_token_once'

check-clang:
	$(MAKE) --no-print-directory CC=clang BUILD=build/clang all tools

# test and bench install what is missing first, then build in a new make: the
# pkg-config flags above are read when make starts, before deps installs them
test:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory build-all
	@tests/run-all

bench:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory build-all
	@build/tools/store-bench
	@build/tools/filter-bench
	@tests/bench/run
	@tests/bench/delivery.py
	@tests/bench/api.sh
	@tests/bench/load.py
	@tests/bench/accounts.py
	@BENCH_ACCOUNTS_STORE=pg tests/bench/accounts.py
	@BENCH_ACCOUNTS_STORE=pg BENCH_ACCOUNTS_INSTANCES=3 tests/bench/accounts.py
	@tests/bench/pg_e2e.py

# tests/integration/test_soak.py at full length; the seed is printed, SOAK_SEED=N replays it
SOAK_SECONDS ?= 600
soak:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory build-all
	@SOAK_SECONDS=$(SOAK_SECONDS) tests/integration/run test_soak

# the failover test of tests/integration/test_pg.py at the issue's size:
# three instances on 50 accounts x 20 messages (make test runs it at 10 x 8)
PG_FAILOVER_SIZE ?= 50x20
soak-pg:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory build-all
	@PG_FAILOVER_SIZE=$(PG_FAILOVER_SIZE) tests/integration/run 'test_pg::*kill9*'

# demo.sh installs what is missing (make deps) before it builds
demo:
	@config/demo.sh

DEPS_APT := build-essential pkg-config clang libclang-rt-14-dev llvm \
    libssl-dev libcurl4-openssl-dev libmicrohttpd-dev libcjson-dev libsqlite3-dev sqlite3 \
    libgmime-3.0-dev libgsasl-dev libpcre2-dev libcmocka-dev libpq-dev postgresql-15 \
    dovecot-core dovecot-pop3d openssl ca-certificates python3 curl procps iproute2 \
    valgrind mpop hyperfine wrk chromium nodejs \
    python3-pytest python3-pytest-timeout python3-jsonschema python3-yaml \
    libsystemd-dev systemd debhelper dpkg-dev fakeroot lintian mandoc man-db adduser
# Quiet when everything is present; installs only what is missing (as root).
deps:
	@missing=$$(for p in $(DEPS_APT); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" != 0 ]; then \
	        echo "make deps: missing Debian packages:" $$missing "-- run as root: sudo make deps" >&2; exit 1; \
	    fi; \
	    echo "installing:" $$missing; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing </dev/null; \
	fi
	@# the browser tests' npm packages, pinned by tests/browser/package-lock.json
	@if ! cmp -s tests/browser/package-lock.json tests/browser/node_modules/.installed-lock 2>/dev/null; then \
	    echo "installing the browser tests' npm packages"; tests/browser/install && \
	    cp tests/browser/package-lock.json tests/browser/node_modules/.installed-lock; \
	fi

# ---- the Debian package ------------------------------------------------------
# config/debian is the debian/ directory; the build happens in a copy of the
# sources under $(BUILD)/debtree, and the package lands in $(BUILD).
DEB_VERSION := $(shell dpkg-parsechangelog -l config/debian/changelog -S Version 2>/dev/null)
DEB_ARCH    := $(shell dpkg --print-architecture 2>/dev/null)
DEB_TREE    := $(BUILD)/debtree/pop3bridge-$(DEB_VERSION)
DEB         := $(BUILD)/pop3bridge_$(DEB_VERSION)_$(DEB_ARCH).deb
deb:
	@test "$(DEB_VERSION)" = "$(VERSION)" || \
	    { echo "config/debian/changelog says $(DEB_VERSION), VERSION says $(VERSION)"; exit 1; }
	rm -rf $(BUILD)/debtree
	mkdir -p $(DEB_TREE)
	cp -R bridge include web config Makefile openapi.yaml VERSION README.md $(DEB_TREE)/
	cp -R config/debian $(DEB_TREE)/debian
	cd $(DEB_TREE) && dpkg-buildpackage --build=binary --no-sign -j2
	cp $(BUILD)/debtree/pop3bridge_$(DEB_VERSION)_$(DEB_ARCH).deb $(DEB)
	@echo "built $(DEB)"

# lintian on the package and its .changes: any error or warning fails
deb-lint: deb
	lintian --info --fail-on error,warning $(DEB) \
	    $(BUILD)/debtree/pop3bridge_$(DEB_VERSION)_$(DEB_ARCH).changes

PREFIX ?= /usr/local
install: $(BIN)
	install -D -m 755 $(BIN) $(DESTDIR)$(PREFIX)/bin/pop3bridge
	mkdir -p $(DESTDIR)$(PREFIX)/share/pop3bridge
	cp -r web openapi.yaml config $(DESTDIR)$(PREFIX)/share/pop3bridge/

clean:
	rm -rf build

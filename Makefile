# rathole in C - see README.md.
#
#   make                 release build, leaves ./rathole
#   make SANITIZE=1      ASan+UBSan build in build/asan/rathole (tests use it)
#   make test            unit tests, fuzz regression inputs, then integration tests (pytest)
#   make fuzz            libFuzzer targets (clang), FUZZ_SECONDS each (default 30)
#   make fuzz-regress    replays the fuzz corpora without libFuzzer (part of make test)
#   make valgrind        a tunnel session under valgrind (fails on errors and leaks)
#   make TLS=0           without TLS (no tls transport, websocket over TCP only, no -lssl)
#   make DASHBOARD=0     without the dashboard page of the admin API (12 KiB smaller)
#   make static          fully static binary (glibc), stripped copy in ./rathole-static
#   make OSSL_DLOPEN=0   OpenSSL linked instead of loaded on demand (build/release-linked)
#   make CC=aarch64-linux-gnu-gcc   cross build (the build directory names the target)
#   make cross-test ARCH=aarch64|armhf   cross build + unit tests under qemu-user
#   make install PREFIX=/usr/local DESTDIR=   (and make uninstall)
#   make deb             Debian package in build/deb/ (dpkg-buildpackage)
#   make image [ARCH=amd64|aarch64|armhf]   container image of the static binary
#   make images          the three images and their manifest list (podman)
#   make check-packaging man pages (mandoc), systemd units, install/uninstall (part of make test)
#   make bench           benchmarks against the direct path (BENCH_QUICK=1: a 2-minute smoke run)
#   make clean

CC       ?= cc
PREFIX   ?= /usr/local
DESTDIR  ?=
PYTHON   ?= /usr/bin/python3
VERSION  := 0.1.0

WARN     := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
            -Wpointer-arith -Wformat=2 -Wno-unused-parameter
CSTD     := -std=gnu11
CPPFLAGS += -D_GNU_SOURCE -DRATHOLE_VERSION=\"$(VERSION)\" -Isrc

ifeq ($(SANITIZE),1)
VARIANT  := asan
OPT      := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
            -fno-sanitize-recover=undefined
LDSAN    := -fsanitize=address,undefined
else
VARIANT  := release
# Built for size: the forwarding work is the kernel's (splice, TCP) and
# OpenSSL's, and -Os measured no slower than -O2 (docs/benchmarks.md,
# change 12) while a smaller binary is fewer pages resident in every process.
# No .eh_frame: C needs no unwinding; -g still emits .debug_frame.
OPT      ?= -Os -g -fno-asynchronous-unwind-tables -fno-unwind-tables
LDSAN    :=
endif

# Build switches: TLS=0 leaves out the TLS code and libssl (a websocket
# transport with tls = true then fails with "not available in this build");
# STATIC=1 links everything statically (see "make static").
TLS      ?= 1
STATIC   ?= 0
ifeq ($(STATIC),1)
VARIANT  := static
# unused functions of libcrypto.a and libssl.a stay out
LDSTATIC := -static -Wl,--gc-sections
endif
ifneq ($(TLS),1)
VARIANT  := $(VARIANT)-notls
CPPFLAGS += -DRATHOLE_NO_TLS
endif
# DASHBOARD=0 leaves the admin API's dashboard page out (src/dashboard/,
# gzip'ed: 12 KiB of the stripped binary); GET / then says so, the rest of the
# API stays.
DASHBOARD ?= 1
ifneq ($(DASHBOARD),1)
VARIANT  := $(VARIANT)-nodash
CPPFLAGS += -DRATHOLE_NO_DASHBOARD
endif

# The target, from the compiler: builds for different targets or compilers
# never share a directory. The native gcc keeps the short names (build/release,
# build/asan) that the docs and the tests use.
TRIPLET  := $(shell $(CC) -dumpmachine 2>/dev/null)
NATIVE   := $(shell cc -dumpmachine 2>/dev/null)
STRIP    ?= $(if $(shell command -v $(TRIPLET)-strip 2>/dev/null),$(TRIPLET)-strip,strip)

CFLAGS   ?= $(OPT)
CFLAGS   += $(CSTD) $(WARN)
LDLIBS   += -lssl -lcrypto -lpthread
LDFLAGS  += $(LDSAN) $(LDSTATIC)
ifneq ($(TLS),1)
LDLIBS   := $(filter-out -lssl,$(LDLIBS))
endif
# OpenSSL is loaded at run time when a transport needs it (src/ossl.h): a
# process on the tcp transport never maps it. A static build links it.
ifeq ($(STATIC),1)
OSSL_DLOPEN := 0
endif
OSSL_DLOPEN ?= 1
ifeq ($(OSSL_DLOPEN),1)
CPPFLAGS += -DRATHOLE_OSSL_DLOPEN
LDLIBS   := $(filter-out -lssl -lcrypto,$(LDLIBS))
else ifneq ($(STATIC),1)
VARIANT  := $(VARIANT)-linked
endif

ifeq ($(TRIPLET),$(NATIVE))
B        := build/$(VARIANT)
else
B        := build/$(TRIPLET)-$(VARIANT)
endif
SRCS     := $(wildcard src/*.c)
ifneq ($(TLS),1)
# tls_none.c stands in for the TLS session layer that websocket uses
SRCS     := $(filter-out src/transport_tls.c src/tls13.c,$(SRCS))
else
SRCS     := $(filter-out src/tls_none.c,$(SRCS))
endif
LIBSRCS  := $(filter-out src/main.c,$(SRCS))
OBJS     := $(SRCS:src/%.c=$(B)/%.o)
LIBOBJS  := $(LIBSRCS:src/%.c=$(B)/%.o)
UNITSRCS := $(wildcard tests/unit/test_*.c)
UNITHELP := $(filter-out $(UNITSRCS),$(wildcard tests/unit/*.c))
ifneq ($(TLS),1)
UNITSRCS := $(filter-out tests/unit/test_tls.c tests/unit/test_tls13.c tests/unit/test_ws.c,$(UNITSRCS))
endif
UNITBINS := $(UNITSRCS:tests/unit/%.c=$(B)/tests/%)
UNITHOBJ := $(UNITHELP:tests/unit/%.c=$(B)/tests/%.o)
BIN      := $(B)/rathole

.PHONY: all clean test unit integration install uninstall check-warnings lint-man \
	check-systemd check-install check-packaging static static-strip cross-build cross-test deb unit-bins \
	fuzz fuzz-regress valgrind bench image images

# ./rathole is the native compiler's release build; other builds (clang,
# cross, sanitizers) stay in their directory. Copied by a rename, so that a
# running ./rathole does not make the copy fail ("Text file busy").
ifeq ($(VARIANT)|$(TRIPLET),release|$(NATIVE))
all: rathole
rathole: $(BIN)
	cp $(BIN) rathole.tmp && mv -f rathole.tmp rathole
else
all: $(BIN)
	@echo "built $(BIN)"
endif

$(BIN): $(OBJS)
	$(CC) $(LDFLAGS) -o $@ $(OBJS) $(LDLIBS)

$(B)/librathole.a: $(LIBOBJS)
	rm -f $@
	$(AR) rcs $@ $(LIBOBJS)

$(B)/%.o: src/%.c | $(B)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c -o $@ $<

$(B)/tests/%.o: tests/unit/%.c | $(B)/tests
	$(CC) $(CPPFLAGS) -Itests/unit $(CFLAGS) -MMD -MP -c -o $@ $<

$(B)/tests/test_%: $(B)/tests/test_%.o $(UNITHOBJ) $(B)/librathole.a
	$(CC) $(LDFLAGS) -o $@ $< $(UNITHOBJ) $(B)/librathole.a $(LDLIBS)

$(B) $(B)/tests:
	mkdir -p $@

-include $(OBJS:.o=.d) $(UNITBINS:=.d) $(UNITHOBJ:.o=.d)

# The dashboard's files go into the binary gzip'ed (-n: no name or time in
# them, the same bytes at every build), included by the assembler
# (src/dashboard.c, .incbin) from build/dashboard/, one copy for every target;
# the compiler's dependency lists do not see them.
DASHFILES := $(wildcard src/dashboard/*)
DASHGZ   := $(DASHFILES:src/dashboard/%=build/dashboard/%.gz)
build/dashboard/%.gz: src/dashboard/%
	@mkdir -p $(@D)
	gzip -9nc $< > $@.tmp && mv $@.tmp $@
$(B)/dashboard.o: $(DASHGZ)

# Unit tests run from the repository root; shared test data lives beside it.
TESTDATA ?= $(abspath ../shared/testdata)

unit: $(UNITBINS)
	@TESTDATA=$(TESTDATA) tests/run-unit.sh $(UNITBINS)

integration: $(BIN)
	RATHOLE_BIN=$(abspath $(BIN)) TESTDATA=$(TESTDATA) $(PYTHON) -m pytest -q -p no:cacheprovider tests/integration $(PYTEST_ARGS)

test: $(BIN) $(UNITBINS) check-packaging fuzz-regress
	@TESTDATA=$(TESTDATA) RATHOLE_BIN=$(abspath $(BIN)) PYTHON=$(PYTHON) \
		tests/run-all.sh $(UNITBINS)

# ---- fuzzing (tests/fuzz/, docs/security.md) ----
# fuzz-regress: each target with a replaying main(), built like the unit tests
# (so SANITIZE=1 replays under ASan+UBSan), over the seeds and regression inputs.
FUZZSRCS := $(wildcard tests/fuzz/fuzz_*.c)
ifneq ($(TLS),1)
FUZZSRCS := $(filter-out tests/fuzz/fuzz_tls13.c,$(FUZZSRCS))
endif
FUZZNAME := $(FUZZSRCS:tests/fuzz/fuzz_%.c=%)
REPLAYS  := $(FUZZNAME:%=$(B)/fuzz/fuzz_%)

$(B)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/replay.c tests/fuzz/fuzz.h $(B)/librathole.a
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) -Itests/fuzz $(CFLAGS) $(LDFLAGS) -o $@ $< tests/fuzz/replay.c \
		$(B)/librathole.a $(LDLIBS)

# Every target must have its corpus (replay fails on a missing path or on no
# input at all); regression inputs are added per target when a bug is found.
fuzz-regress: $(REPLAYS)
	@for t in $(FUZZNAME); do \
		r=tests/fuzz/regress/$$t; [ -d $$r ] || r=; \
		$(B)/fuzz/fuzz_$$t tests/fuzz/corpus/$$t $$r \
			2>$(B)/fuzz/$$t.log || { tail -40 $(B)/fuzz/$$t.log; \
			echo "fuzz-regress: $$t FAILED (log: $(B)/fuzz/$$t.log)"; exit 1; }; \
	done

# fuzz: the libFuzzer build in build/fuzz/ (clang, ASan+UBSan, coverage on the
# library too), then tests/fuzz/run.sh runs each target for FUZZ_SECONDS.
FUZZCC   ?= clang
FUZZ_SECONDS ?= 30
FB       := build/fuzz
FUZZOPT  := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
            -fno-sanitize-recover=undefined
FUZZLIBO := $(LIBSRCS:src/%.c=$(FB)/obj/%.o)
FUZZBINS := $(FUZZNAME:%=$(FB)/fuzz_%)

$(FB)/obj/%.o: src/%.c
	@mkdir -p $(@D)
	$(FUZZCC) $(CPPFLAGS) $(CSTD) $(WARN) $(FUZZOPT) -fsanitize=fuzzer-no-link -MMD -MP -c -o $@ $<

$(FB)/librathole.a: $(FUZZLIBO)
	rm -f $@
	$(AR) rcs $@ $(FUZZLIBO)

$(FB)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h $(FB)/librathole.a
	$(FUZZCC) $(CPPFLAGS) -Itests/fuzz $(CSTD) $(WARN) $(FUZZOPT) -fsanitize=fuzzer \
		-o $@ $< $(FB)/librathole.a $(LDLIBS)

-include $(FUZZLIBO:.o=.d)
$(FB)/obj/dashboard.o: $(DASHGZ)

fuzz: $(FUZZBINS)
	@FUZZ_SECONDS=$(FUZZ_SECONDS) TESTDATA=$(TESTDATA) tests/fuzz/run.sh $(FUZZBINS)

# valgrind: a whole tunnel session (tcp echo, a few MB, UDP, SIGTERM) with
# server and client under valgrind; the release build (valgrind and ASan
# do not mix). Skipped with a message when valgrind is not installed.
valgrind: $(BIN)
	RATHOLE_BIN=$(abspath $(BIN)) TESTDATA=$(TESTDATA) RATHOLE_VALGRIND=1 \
		$(PYTHON) -m pytest -q -p no:cacheprovider tests/integration/test_valgrind.py

# Performance is measured here, never asserted in `make test` (see docs/benchmarks.md).
bench: rathole
	$(PYTHON) bench/bench.py --rathole $(abspath rathole) $(BENCH_ARGS)

# ---- installation (packaging: debian/rules runs "make install PREFIX=/usr") ----
#
# Installs the binary of the selected build (TLS=0, STATIC=1, SANITIZE=1 and CC
# choose it), the man pages, the examples and the systemd units; the units'
# /usr/bin/rathole is rewritten to $(PREFIX)/bin/rathole.

BINDIR   ?= $(PREFIX)/bin
MANDIR   ?= $(PREFIX)/share/man
DOCDIR   ?= $(PREFIX)/share/doc/rathole
UNITDIR  ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
MANPAGES := man/rathole.1 man/rathole.toml.5
UNITS    := $(wildcard examples/systemd/*.service)
EXAMPLES := $(sort $(shell find examples -type f))

install: $(BIN)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 \
		$(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR)
	install -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/rathole
	install -m 0644 man/rathole.1 $(DESTDIR)$(MANDIR)/man1/rathole.1
	install -m 0644 man/rathole.toml.5 $(DESTDIR)$(MANDIR)/man5/rathole.toml.5
	for f in $(EXAMPLES); do \
		install -d $(DESTDIR)$(DOCDIR)/$$(dirname $$f) && \
		if [ -x $$f ]; then m=0755; else m=0644; fi && \
		install -m $$m $$f $(DESTDIR)$(DOCDIR)/$$f || exit 1; \
	done
	for f in $(UNITS); do \
		sed 's|/usr/bin/rathole|$(BINDIR)/rathole|g' $$f > $(DESTDIR)$(UNITDIR)/$$(basename $$f) && \
		chmod 0644 $(DESTDIR)$(UNITDIR)/$$(basename $$f) || exit 1; \
	done
	install -m 0644 examples/systemd/rathole.sysusers $(DESTDIR)$(SYSUSERSDIR)/rathole.conf
	install -m 0644 examples/systemd/rathole.tmpfiles $(DESTDIR)$(TMPFILESDIR)/rathole.conf

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/rathole $(DESTDIR)$(MANDIR)/man1/rathole.1 \
		$(DESTDIR)$(MANDIR)/man5/rathole.toml.5 \
		$(DESTDIR)$(SYSUSERSDIR)/rathole.conf $(DESTDIR)$(TMPFILESDIR)/rathole.conf \
		$(addprefix $(DESTDIR)$(UNITDIR)/,$(notdir $(UNITS)))
	rm -rf $(DESTDIR)$(DOCDIR)

# ---- checks of the packaging (part of "make test") ----

lint-man:
	@if ! command -v mandoc >/dev/null 2>&1; then \
		echo "lint-man: SKIPPED: mandoc is not installed (apt-get install mandoc)"; exit 0; fi; \
	mandoc -T lint -W warning $(MANPAGES) && echo "lint-man: $(words $(MANPAGES)) man pages clean"

check-systemd: $(BIN)
	@tests/check-systemd.sh $(abspath $(BIN))

check-install: $(BIN)
	@tests/check-install.sh "$(MAKE)" $(abspath $(BIN))

check-packaging: lint-man check-systemd check-install

# ---- a fully static binary (routers); see README "Building small" ----

# glibc's static getaddrinfo still loads the NSS modules of its own version at
# run time for anything but DNS and /etc/hosts (the link warns about it).
static:
	$(MAKE) STATIC=1 static-strip

static-strip: $(BIN)
	$(STRIP) -o $(BIN)-stripped $(BIN)
ifeq ($(TRIPLET),$(NATIVE))
	cp $(BIN)-stripped rathole-static
endif
	@ls -l $(BIN)-stripped

# ---- cross builds, unit tests under qemu-user (scripts/cross-test.sh installs the tools) ----

ARCH     ?= aarch64
XTRIPLET_aarch64 := aarch64-linux-gnu
XTRIPLET_armhf   := arm-linux-gnueabihf
XQEMU_aarch64    := qemu-aarch64
XQEMU_armhf      := qemu-arm
XTRIPLET := $(XTRIPLET_$(ARCH))
XQEMU    := $(XQEMU_$(ARCH))

unit-bins: $(BIN) $(UNITBINS)

cross-build:
	@test -n "$(XTRIPLET)" || { echo "ARCH=$(ARCH): use ARCH=aarch64 or ARCH=armhf"; exit 2; }
	$(MAKE) CC=$(XTRIPLET)-gcc unit-bins

# The target's loader and libraries come from the multiarch packages (libc6:arm64
# and libssl3:arm64 are in /lib/aarch64-linux-gnu, the loader in /lib), not
# from /usr/aarch64-linux-gnu: that one's ld.so is the cross toolchain's glibc
# build, and mixed with the multiarch libc.so.6 that it finds first, threads
# hang (aarch64) or crash (armhf) under qemu.
XLDPREFIX ?= /
cross-test: cross-build
	@TESTDATA=$(TESTDATA) QEMU_LD_PREFIX=$(XLDPREFIX) \
		tests/run-unit-qemu.sh $(XQEMU) build/$(XTRIPLET)-$(VARIANT)

# ---- the container image (Containerfile; README "Container image") ----
#
# make image: the static binary of ARCH (default: this machine's; a cross
# build for the others, as above) in IMAGE:VERSION-<arch> (amd64, arm64,
# armhf), also IMAGE:latest for this machine's. make images: all of
# IMAGE_ARCHES and the manifest list IMAGE:VERSION. ENGINE: podman, else
# docker, with any global options ("podman --root DIR"); TLS=0 and DASHBOARD=0 go through.

IMAGE        ?= rathole
IMAGE_ARCHES ?= amd64 aarch64 armhf
ENGINE       ?=
CA_BUNDLE    ?= /etc/ssl/certs/ca-certificates.crt
# ARCH's own default (aarch64) is the cross tests'; the image's is this machine's
IMG_ARCH := $(if $(filter command line environment,$(origin ARCH)),$(ARCH),$(patsubst arm,armhf,$(firstword $(subst -, ,$(NATIVE)))))
# the cross tests' triplets, and the names an image may go by
ITRIPLET_amd64  := x86_64-linux-gnu
ITRIPLET_x86_64 := x86_64-linux-gnu
ITRIPLET_arm64  := aarch64-linux-gnu
IMG_TRIPLET := $(or $(XTRIPLET_$(IMG_ARCH)),$(ITRIPLET_$(IMG_ARCH)))
IMG_CC   := $(if $(filter $(NATIVE),$(IMG_TRIPLET)),,CC=$(IMG_TRIPLET)-gcc)
IMG_BIN  := build/$(if $(IMG_CC),$(IMG_TRIPLET)-)static$(if $(filter-out 1,$(TLS)),-notls)$(if $(filter-out 1,$(DASHBOARD)),-nodash)/rathole-stripped

image:
	@test -n "$(IMG_TRIPLET)" || { echo "ARCH=$(IMG_ARCH): use ARCH=amd64, aarch64 or armhf"; exit 2; }
	@test -z "$(IMG_CC)" || command -v $(IMG_TRIPLET)-gcc >/dev/null || { echo "no $(IMG_TRIPLET)-gcc" \
		"for ARCH=$(IMG_ARCH) (scripts/cross-test.sh --tools installs the cross compilers)"; exit 2; }
	$(MAKE) static $(IMG_CC)
	@ENGINE='$(ENGINE)' IMAGE='$(IMAGE)' VERSION='$(VERSION)' CA_BUNDLE='$(CA_BUNDLE)' \
		scripts/build-image.sh build $(IMG_ARCH) $(IMG_BIN)

images:
	@for a in $(IMAGE_ARCHES); do $(MAKE) --no-print-directory image ARCH=$$a || exit 1; done
	@ENGINE='$(ENGINE)' IMAGE='$(IMAGE)' VERSION='$(VERSION)' \
		scripts/build-image.sh manifest $(IMAGE_ARCHES)

# ---- the Debian package, built from a copy of the tree ----

deb:
	@scripts/build-deb.sh build/deb

clean:
	rm -rf build rathole rathole-static

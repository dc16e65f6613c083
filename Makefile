# rathole in C - see README.md.
#
#   make                 release build, leaves ./rathole
#   make SANITIZE=1      ASan+UBSan build in build/asan/rathole (tests use it)
#   make test            unit tests, fuzz regression inputs, then integration tests (pytest)
#   make fuzz            libFuzzer targets (clang), FUZZ_SECONDS each (default 30)
#   make fuzz-regress    replays the fuzz corpora without libFuzzer (part of make test)
#   make valgrind        a tunnel session under valgrind (fails on errors and leaks)
#   make install PREFIX=/usr/local DESTDIR=
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
OPT      ?= -O2 -g
LDSAN    :=
endif

CFLAGS   ?= $(OPT)
CFLAGS   += $(CSTD) $(WARN)
LDLIBS   += -lssl -lcrypto -lpthread
LDFLAGS  += $(LDSAN)

B        := build/$(VARIANT)
SRCS     := $(wildcard src/*.c)
LIBSRCS  := $(filter-out src/main.c,$(SRCS))
OBJS     := $(SRCS:src/%.c=$(B)/%.o)
LIBOBJS  := $(LIBSRCS:src/%.c=$(B)/%.o)
UNITSRCS := $(wildcard tests/unit/test_*.c)
UNITHELP := $(filter-out $(UNITSRCS),$(wildcard tests/unit/*.c))
UNITBINS := $(UNITSRCS:tests/unit/%.c=$(B)/tests/%)
UNITHOBJ := $(UNITHELP:tests/unit/%.c=$(B)/tests/%.o)
BIN      := $(B)/rathole

.PHONY: all clean test unit integration install check-warnings fuzz fuzz-regress valgrind

ifeq ($(VARIANT),release)
all: rathole
rathole: $(BIN)
	cp $(BIN) rathole
else
all: $(BIN)
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

# Unit tests run from the repository root; shared test data lives beside it.
TESTDATA ?= $(abspath ../shared/testdata)

unit: $(UNITBINS)
	@TESTDATA=$(TESTDATA) tests/run-unit.sh $(UNITBINS)

integration: $(BIN)
	RATHOLE_BIN=$(abspath $(BIN)) TESTDATA=$(TESTDATA) $(PYTHON) -m pytest -q -p no:cacheprovider tests/integration $(PYTEST_ARGS)

test: $(BIN) $(UNITBINS) fuzz-regress
	@TESTDATA=$(TESTDATA) RATHOLE_BIN=$(abspath $(BIN)) PYTHON=$(PYTHON) \
		tests/run-all.sh $(UNITBINS)

# ---- fuzzing (tests/fuzz/, docs/security.md) ----
# fuzz-regress: each target with a replaying main(), built like the unit tests
# (so SANITIZE=1 replays under ASan+UBSan), over the seeds and regression inputs.
FUZZSRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZNAME := $(FUZZSRCS:tests/fuzz/fuzz_%.c=%)
REPLAYS  := $(FUZZNAME:%=$(B)/fuzz/fuzz_%)

$(B)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/replay.c tests/fuzz/fuzz.h $(B)/librathole.a
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) -Itests/fuzz $(CFLAGS) $(LDFLAGS) -o $@ $< tests/fuzz/replay.c \
		$(B)/librathole.a $(LDLIBS)

fuzz-regress: $(REPLAYS)
	@for t in $(FUZZNAME); do \
		$(B)/fuzz/fuzz_$$t tests/fuzz/corpus/$$t tests/fuzz/regress/$$t \
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

fuzz: $(FUZZBINS)
	@FUZZ_SECONDS=$(FUZZ_SECONDS) TESTDATA=$(TESTDATA) tests/fuzz/run.sh $(FUZZBINS)

# valgrind: a whole tunnel session (tcp echo, a few MB, UDP, SIGTERM) with
# server and client under valgrind; the release build (valgrind and ASan
# do not mix). Skipped with a message when valgrind is not installed.
valgrind: $(BIN)
	RATHOLE_BIN=$(abspath $(BIN)) TESTDATA=$(TESTDATA) RATHOLE_VALGRIND=1 \
		$(PYTHON) -m pytest -q -p no:cacheprovider tests/integration/test_valgrind.py

install: rathole
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 rathole $(DESTDIR)$(PREFIX)/bin/rathole

clean:
	rm -rf build rathole

# rathole in C - see README.md.
#
#   make                 release build, leaves ./rathole
#   make SANITIZE=1      ASan+UBSan build in build/asan/rathole (tests use it)
#   make test            unit tests, then integration tests (pytest)
#   make bench           benchmarks against the direct path (BENCH_QUICK=1: a 2-minute smoke run)
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

.PHONY: all clean test unit integration install check-warnings bench

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

test: $(BIN) $(UNITBINS)
	@TESTDATA=$(TESTDATA) RATHOLE_BIN=$(abspath $(BIN)) PYTHON=$(PYTHON) \
		tests/run-all.sh $(UNITBINS)

# Performance is measured here, never asserted in `make test` (see docs/benchmarks.md).
bench: rathole
	$(PYTHON) bench/bench.py --rathole $(abspath rathole) $(BENCH_ARGS)

install: rathole
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 rathole $(DESTDIR)$(PREFIX)/bin/rathole

clean:
	rm -rf build rathole

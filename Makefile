# mxsend: one non-recursive Makefile. `make test` = deps + layering check + build + unit
# (ASan/UBSan) + integration.
CC      ?= cc
# mxsend's version; also in the .TH lines of sender/dist/mxsend.1 and mxsend.conf.5 (t_install checks)
VERSION := 0.1.0
PKGS    := liburing openssl libcares hiredis inih jansson zlib
B       := build
BA      := build/asan
WARN    := -Wall -Wextra -Wstrict-prototypes -Wmissing-prototypes -Wshadow -Werror
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CFLAGS  ?= -O2 -g
INC     = -I.
ALL_CFLAGS = -std=gnu11 $(WARN) -MMD -MP $(INC) $(PKG_CFLAGS) $(CFLAGS)
SAN     := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDLIBS  = $(PKG_LIBS) -lpthread
# The programs (not the ASan unit tests, whose allocator ASan replaces) use jemalloc, as Redis
# does: OpenSSL and the queue path allocate and free many small objects per message, and glibc's
# malloc spent ~10% of mxsend's CPU there (bench q1 and b0 about 8-10% less CPU per message).
# Linked from Debian's static libjemalloc_pic.a: the shared libjemalloc.so.2 pulls in libstdc++,
# and loading and relocating that cost every `mxsend send` ~1 ms of its ~8 (perf stat -r 30).
MALLOC_LIBS := -l:libjemalloc_pic.a -lm -ldl

# Debian packages the project, its tests, demo and benchmarks need. postfix (tests/integ/t_mta.sh,
# bench/postfix.sh) is installed with debconf's 'No configuration': no main.cf, no system instance;
# the test and the bench run private instances (postfix -c DIR) on 127.0.9.x.
# The scripts' own tools are listed too, though most Debian machines have them: perl (the tests'
# DNS client, JSON::PP, message checks), iproute2 (ss: free ports), procps (ps, pgrep). ldnsutils (ldns-keygen, ldns-signzone) signs
# t_dane.sh's zone (tests/integ/dnssec.sh); bind9-dnsutils has dig (the AD bit, checked there).
DEB_PKGS := gcc make pkg-config python3 perl iproute2 procps \
	liburing-dev libssl-dev libc-ares-dev libhiredis-dev libinih-dev libjansson-dev zlib1g-dev \
	libjemalloc-dev \
	python3-dkim python3-nacl python3-dnspython python3-redis openssl unbound redis-server redis-tools redis-sentinel \
	nginx-light gnuplot-nox ca-certificates postfix man-db groff-base ldnsutils bind9-dnsutils \
	libgnutls-dane0 libgnutls30 libidn12 libevent-2.1-7 libnsl2 libdb5.3 libpam0g
# Receiving MTAs for tests/integ/t_interop.sh (and t_dane_mta.sh, t_shaping_mta.sh) that cannot be installed beside postfix (Debian's
# exim4-daemon-light and opensmtpd conflict with it, all three provide mail-transport-agent):
# their packages are downloaded and unpacked with dpkg -x into INTEROP_ROOT (no maintainer
# scripts, no users, nothing system-wide); the libraries they link are in DEB_PKGS above.
INTEROP_ROOT ?= /var/cache/mxsend/interop
# A machine just booted may be running apt's daily jobs (unattended-upgrades): installs wait for
# dpkg's lock (10 min at most), and `apt-get update`, which does not wait for the lists' lock, is
# tried again every 10 s (2 min at most). A machine that never ran `apt-get update` has no package
# lists: they are made first, so the install does not fail once ("Unable to locate package").
APT_GET := apt-get -q -o DPkg::Lock::Timeout=600
APT_UPDATE := { ok=0; for i in 1 2 3 4 5 6 7 8 9 10 11 12; do \
	$(APT_GET) update >/dev/null && { ok=1; break; }; \
	[ $$i = 12 ] || { echo "deps: apt-get update failed, again in 10 s ($$i of 12)"; sleep 10; }; \
	done; [ $$ok = 1 ]; }
APT_LISTS := { ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1 || $(APT_UPDATE); }
INTEROP_PKGS := exim4-daemon-light opensmtpd
export INTEROP_ROOT

LIB_SRC  := $(filter-out sender/main.c,$(wildcard sender/*.c sender/cmd/*.c sender/policy/*.c queue/*.c tlscache/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(B)/%.o)
LIBA_OBJ := $(LIB_SRC:%.c=$(BA)/%.o)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BA)/%)
BENCH_SRC := $(wildcard bench/*.c)
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(B)/mx%)
# Fuzzing: tests/fuzz/fuzz_NAME.c are libFuzzer targets. `make fuzz` (not part of all or test)
# builds each with clang into build/fuzz/ and runs it FUZZ_TIME seconds on build/fuzz/corpus/NAME,
# seeded from tests/fuzz/seeds/NAME/; a crash is saved as build/fuzz/crash-NAME-*. FUZZ_TARGETS
# picks some, FUZZ_FLAGS adds libFuzzer flags. `make test` replays tests/fuzz/seeds/NAME/ through
# build/fuzz/replay_NAME (tests/fuzz/replay.c, gcc with the unit tests' sanitizers).
FZ          := build/fuzz
FUZZ_CC     ?= clang
FUZZ_TIME   ?= 60
FUZZ_SAN    := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_NAMES  := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_TARGETS ?= $(FUZZ_NAMES)
FUZZ_LIBOBJ := $(LIB_SRC:%.c=$(FZ)/obj/%.o)
REPLAY_BIN  := $(FUZZ_NAMES:%=$(FZ)/replay_%)

.PHONY: all deps test test-unit test-integ test-layer bench bench-postfix demo fuzz fuzz-deps clean \
	install uninstall
all: $(B)/mxsend $(BENCH_BIN)

# The layering, enforced: queue/ and tlscache/ never include sender/ (DESIGN.md). Their files
# compile with -I$(LAYER) instead of -I.: $(LAYER) holds links to queue/ and tlscache/ only, so
# an `#include "sender/..."` there is an error ("No such file or directory"), in every build
# (programs, ASan, fuzz). `make test-layer` (run by make test) proves the check bites: a probe
# including a sender/ header must fail under these flags, one including queue/ and tlscache/
# headers must compile.
LAYER     := $(B)/layer
LAYER_INC := -I$(LAYER)
LAYER_OBJ := $(filter $(B)/queue/% $(B)/tlscache/% $(BA)/queue/% $(BA)/tlscache/% \
	$(FZ)/obj/queue/% $(FZ)/obj/tlscache/%,$(LIB_OBJ) $(LIBA_OBJ) $(FUZZ_LIBOBJ))
$(B)/queue/%.o $(B)/tlscache/%.o $(BA)/queue/%.o $(BA)/tlscache/%.o \
$(FZ)/obj/queue/%.o $(FZ)/obj/tlscache/%.o: INC = $(LAYER_INC)
$(LAYER_OBJ): | $(LAYER)/.ok
$(LAYER)/.ok:
	@mkdir -p $(LAYER)
	@ln -sfn ../../queue $(LAYER)/queue && ln -sfn ../../tlscache $(LAYER)/tlscache && touch $@

test-layer: $(LAYER)/.ok
	@mkdir -p $(B)/layer-probe
	@printf '#include "sender/util.h"\n' >$(B)/layer-probe/bad.c
	@printf '#include "queue/queue.h"\n#include "tlscache/tlscache.h"\n' >$(B)/layer-probe/good.c
	@if $(CC) -std=gnu11 $(LAYER_INC) $(PKG_CFLAGS) -fsyntax-only $(B)/layer-probe/bad.c \
		>$(B)/layer-probe/bad.log 2>&1 || ! grep -q 'sender/util.h: No such file' $(B)/layer-probe/bad.log; then \
		echo "not ok - layering: a sender/ header is reachable with queue/'s and tlscache/'s flags"; exit 1; \
	fi
	@$(CC) -std=gnu11 $(WARN) $(LAYER_INC) $(PKG_CFLAGS) -fsyntax-only $(B)/layer-probe/good.c || \
		{ echo "not ok - layering: queue/ and tlscache/ headers do not compile with the layer flags"; exit 1; }
	@echo "layering: ok (queue/ and tlscache/ compile with $(LAYER_INC), where sender/ headers are not found)"

deps:
	@missing=""; for p in $(DEB_PKGS); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "deps: installing$$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		case " $$missing " in *" postfix "*) \
			echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections || exit 1;; \
		esac; \
		$(APT_LISTS) || exit 1; \
		$(APT_GET) install -y --no-install-recommends $$missing >/dev/null || \
		{ $(APT_UPDATE) && $(APT_GET) install -y --no-install-recommends $$missing >/dev/null; } || exit 1; \
	fi
	@if [ ! -x $(INTEROP_ROOT)/usr/sbin/exim4 ] || [ ! -x $(INTEROP_ROOT)/usr/sbin/smtpd ]; then \
		echo "deps: unpacking $(INTEROP_PKGS) into $(INTEROP_ROOT)"; \
		d=$$(mktemp -d) && chown _apt $$d 2>/dev/null; cd $$d || exit 1; \
		$(APT_LISTS) || exit 1; \
		$(APT_GET) download $(INTEROP_PKGS) >/dev/null 2>&1 || \
		{ $(APT_UPDATE) && $(APT_GET) download $(INTEROP_PKGS) >/dev/null; } || exit 1; \
		mkdir -p $(INTEROP_ROOT) && for f in *.deb; do dpkg -x $$f $(INTEROP_ROOT) || exit 1; done; \
		cd / && rm -rf $$d; \
	fi
	@# The unpacked MTAs look up their compiled-in users at start, whatever their config says:
	@# Exim its Debian-exim (exits "failed to find uid for user name"), OpenSMTPD opensmtpd and
	@# opensmtpq. Debian's maintainer scripts (not run by dpkg -x) would create them; so do we,
	@# as system users with no login and no home, once.
	@for u in Debian-exim opensmtpd opensmtpq; do \
		getent passwd $$u >/dev/null && continue; \
		echo "deps: creating system user $$u"; \
		getent group $$u >/dev/null || groupadd --system $$u || exit 1; \
		useradd --system --gid $$u --no-create-home --home-dir /nonexistent \
			--shell /usr/sbin/nologin $$u || exit 1; \
	done

# `mxsend --version` (sender/cmd/version.c): mxsend's version, and liburing's as
# compiled against (2.3 has no version macro).
VERSION_OBJ := $(B)/sender/cmd/version.o $(BA)/sender/cmd/version.o $(FZ)/obj/sender/cmd/version.o
$(VERSION_OBJ): ALL_CFLAGS += -DMXSEND_VERSION='"$(VERSION)"' \
	-DMXSEND_URING_VERSION='"$(shell pkg-config --modversion liburing 2>/dev/null)"'
$(VERSION_OBJ): Makefile

$(B)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BA)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(SAN) -O1 -c -o $@ $<

$(B)/libmxsend.a: $(LIB_OBJ)
	@rm -f $@; ar rcs $@ $^

$(BA)/libmxsend.a: $(LIBA_OBJ)
	@rm -f $@; ar rcs $@ $^

$(B)/mxsend: $(B)/sender/main.o $(B)/libmxsend.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS) $(MALLOC_LIBS)

$(B)/mx%: $(B)/bench/%.o $(B)/libmxsend.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS) $(MALLOC_LIBS)

# mxsend under ASan/UBSan (glibc malloc: ASan replaces it), run by tests/integ/t_asan.sh
$(BA)/mxsend: $(BA)/sender/main.o $(BA)/libmxsend.a
	$(CC) $(SAN) -o $@ $^ $(LDLIBS)

$(BA)/test_%: $(BA)/tests/unit/test_%.o $(BA)/libmxsend.a
	$(CC) $(SAN) -o $@ $^ $(LDLIBS)

# C drivers of the integration tests (tests/integ/NAME_driver.c -> build/asan/NAME_driver),
# built like the unit tests: the project's warnings, ASan/UBSan, the ASan library.
INTEG_DRV := $(patsubst tests/integ/%.c,$(BA)/%,$(wildcard tests/integ/*_driver.c))
$(BA)/%_driver: $(BA)/tests/integ/%_driver.o $(BA)/libmxsend.a
	$(CC) $(SAN) -o $@ $^ $(LDLIBS)

$(FZ)/replay_%: $(BA)/tests/fuzz/replay.o $(BA)/tests/fuzz/fuzz_%.o $(BA)/libmxsend.a
	@mkdir -p $(dir $@)
	$(CC) $(SAN) -o $@ $^ $(LDLIBS)

test: deps
	@$(MAKE) --no-print-directory test-layer
	@$(MAKE) --no-print-directory all $(BA)/mxsend $(UNIT_BIN) $(REPLAY_BIN) $(INTEG_DRV)
	@tests/run.sh

test-unit: test-layer all $(UNIT_BIN) $(REPLAY_BIN)
	@tests/run.sh unit

test-integ: all $(BA)/mxsend $(INTEG_DRV)
	@tests/run.sh integ

bench: deps all
	@bench/run.sh

# Postfix and mxsend side by side through the same sink (a private Postfix instance; postfix from deps)
bench-postfix: deps all
	@bench/postfix.sh

demo: deps all
	@tests/integ/demo.sh

# clang and its libFuzzer runtime, installed only if missing (as deps does for the rest)
fuzz-deps:
	@missing=""; for p in clang libclang-rt-dev; do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "fuzz-deps: installing$$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q --no-install-recommends $$missing >/dev/null || \
		{ apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $$missing >/dev/null; } || exit 1; \
	fi

$(FZ)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(ALL_CFLAGS) -O1 -fsanitize=fuzzer-no-link $(FUZZ_SAN) -c -o $@ $<

$(FZ)/libmxsend.a: $(FUZZ_LIBOBJ)
	@rm -f $@; ar rcs $@ $^

$(FZ)/fuzz_%: $(FZ)/obj/tests/fuzz/fuzz_%.o $(FZ)/libmxsend.a
	$(FUZZ_CC) -fsanitize=fuzzer $(FUZZ_SAN) -o $@ $^ $(LDLIBS)

# Each target in turn; a crash does not stop the others, but fails the run.
fuzz: fuzz-deps
	@$(MAKE) --no-print-directory $(FUZZ_TARGETS:%=$(FZ)/fuzz_%)
	@failed=""; for n in $(FUZZ_TARGETS); do \
		mkdir -p $(FZ)/corpus/$$n; \
		[ -d tests/fuzz/seeds/$$n ] && cp -n tests/fuzz/seeds/$$n/* $(FZ)/corpus/$$n/ 2>/dev/null; \
		dict=""; [ -f tests/fuzz/$$n.dict ] && dict=-dict=tests/fuzz/$$n.dict; \
		echo "fuzz: $$n for $(FUZZ_TIME) s"; \
		$(FZ)/fuzz_$$n -max_total_time=$(FUZZ_TIME) -print_final_stats=1 \
			-artifact_prefix=$(FZ)/crash-$$n- $$dict $(FUZZ_FLAGS) $(FZ)/corpus/$$n \
			>$(FZ)/fuzz-$$n.log 2>&1 || failed="$$failed $$n"; \
		grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ *DONE)' $(FZ)/fuzz-$$n.log; \
	done; \
	if [ -n "$$failed" ]; then \
		echo "fuzz: FAILED:$$failed (logs $(FZ)/fuzz-NAME.log; inputs $(FZ)/crash-NAME-*)"; exit 1; \
	fi

# `make install` (PREFIX, DESTDIR): the programs, the man pages, the example
# config and the Redis ACL user (docs), the bounce-class rules (DATADIR), a systemd unit and its system user
# (sysusers.d), and the config itself, from the example, only where none
# exists (root:mxsend 0640 when the user exists: it may hold passwords).
# `make uninstall` removes what install wrote under PREFIX, the unit and the
# sysusers file; the config (yours) and the user stay. The paths are written
# into the unit; BINDIR, MANDIR, DOCDIR, DATADIR, UNITDIR, SYSUSERSDIR, CONFDIR may be
# set one by one. tests/integ/t_install.sh checks the tree, the man pages and
# the unit (systemd-analyze verify).
PREFIX      ?= /usr/local
BINDIR      ?= $(PREFIX)/bin
MANDIR      ?= $(PREFIX)/share/man
DOCDIR      ?= $(PREFIX)/share/doc/mxsend
DATADIR     ?= $(PREFIX)/share/mxsend
UNITDIR     ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
CONFDIR     ?= /etc/mxsend
INSTALL_BIN := mxsend mxsink mxload
DIST        := sender/dist

$(B)/mxsend.service: $(DIST)/mxsend.service.in Makefile
	@mkdir -p $(B)
	sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@CONFDIR@|$(CONFDIR)|g' $< >$@

install: $(INSTALL_BIN:%=$(B)/%) $(B)/mxsend.service
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 \
		$(DESTDIR)$(DOCDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(DATADIR)
	install -m 0755 $(INSTALL_BIN:%=$(B)/%) $(DESTDIR)$(BINDIR)/
	@# the shipped bounce-class rules, where mxsend looks (BINDIR/../share/mxsend; README)
	install -m 0644 sender/classes.conf $(DESTDIR)$(DATADIR)/classes.conf
	install -m 0644 $(DIST)/mxsend.1 $(DESTDIR)$(MANDIR)/man1/mxsend.1
	install -m 0644 $(DIST)/mxsend.conf.5 $(DESTDIR)$(MANDIR)/man5/mxsend.conf.5
	install -m 0644 sender/mxsend.conf.example $(DIST)/mxsend.acl $(DESTDIR)$(DOCDIR)/
	install -m 0644 $(B)/mxsend.service $(DESTDIR)$(UNITDIR)/mxsend.service
	install -m 0644 $(DIST)/sysusers.conf $(DESTDIR)$(SYSUSERSDIR)/mxsend.conf
	@# the user, on this machine only (not into a DESTDIR image: sysusers.d makes it at boot)
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && ! getent passwd mxsend >/dev/null; then \
		echo "install: creating system user mxsend"; \
		systemd-sysusers $(SYSUSERSDIR)/mxsend.conf 2>/dev/null || \
		useradd --system --user-group --no-create-home --home-dir /nonexistent \
			--shell /usr/sbin/nologin mxsend || exit 1; \
	fi
	install -d -m 0755 $(DESTDIR)$(CONFDIR)
	@if [ -e $(DESTDIR)$(CONFDIR)/mxsend.conf ]; then \
		echo "install: $(DESTDIR)$(CONFDIR)/mxsend.conf exists: kept"; \
	else \
		install -m 0640 sender/mxsend.conf.example $(DESTDIR)$(CONFDIR)/mxsend.conf && \
		if [ "$$(id -u)" = 0 ] && getent group mxsend >/dev/null; then \
			chgrp mxsend $(DESTDIR)$(CONFDIR)/mxsend.conf; fi; \
	fi

uninstall:
	rm -f $(INSTALL_BIN:%=$(DESTDIR)$(BINDIR)/%) $(DESTDIR)$(MANDIR)/man1/mxsend.1 \
		$(DESTDIR)$(MANDIR)/man5/mxsend.conf.5 $(DESTDIR)$(DOCDIR)/mxsend.conf.example \
		$(DESTDIR)$(DOCDIR)/mxsend.acl $(DESTDIR)$(UNITDIR)/mxsend.service \
		$(DESTDIR)$(SYSUSERSDIR)/mxsend.conf $(DESTDIR)$(DATADIR)/classes.conf
	rmdir $(DESTDIR)$(DOCDIR) $(DESTDIR)$(DATADIR) 2>/dev/null || true
	@echo "uninstall: kept $(DESTDIR)$(CONFDIR)/mxsend.conf and the user mxsend (remove them by hand)"

clean:
	rm -rf $(B)

-include $(shell find $(B) -name '*.d' 2>/dev/null)

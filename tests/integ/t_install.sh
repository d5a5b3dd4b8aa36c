#!/usr/bin/env bash
# tests/integ/t_install.sh: `make install DESTDIR=...` as an operator runs it:
# the tree it writes (programs, man pages, docs, systemd unit, sysusers file,
# a config only where none exists), the installed mxsend's --version, both man
# pages rendered by man(1) without a warning and complete (every command and
# flag of `mxsend --help`, every section and key of sender/config.c, every key
# in mxsend.conf.example), the unit's sandbox and `systemd-analyze verify`
# (skipped, saying so, where systemd is not installed), and `make uninstall`.
# shellcheck disable=SC2317 # case functions run indirectly, each in its run_case subshell
set -u
. "$(dirname "$0")/lib.sh"

integ_setup
integ_require mxsend make man groff

ROOT=$INTEG_DIR/root # the DESTDIR
PREFIX=/usr/local
MAN1=$INTEG_ROOT/sender/dist/mxsend.1
MAN5=$INTEG_ROOT/sender/dist/mxsend.conf.5
CONFIG_C=$INTEG_ROOT/sender/config.c
EXAMPLE=$INTEG_ROOT/sender/mxsend.conf.example

# mk TARGET [VAR=VALUE...]: make in the source tree, as a fresh invocation
# (not a sub-make of `make test`), output in $CASE_DIR/make.log.
mk() {
	env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -C "$INTEG_ROOT" --no-print-directory "$@" \
		>>"$CASE_DIR/make.log" 2>&1
}

# installed [ROOT]: make install into ROOT (default $ROOT), once per run.
installed() {
	local r=${1:-$ROOT}
	[ -x "$r$PREFIX/bin/mxsend" ] && return 0
	mk install DESTDIR="$r" || { fail "make install failed: $(tail -n 5 "$CASE_DIR/make.log")"; return 1; }
}

# mode FILE: its permission bits, octal (e.g. 755).
mode() { stat -c %a "$1"; }

t_tree() {
	installed || return 1
	local f
	for f in bin/mxsend bin/mxsink bin/mxload; do
		assert_eq "$f mode" 755 "$(mode "$ROOT$PREFIX/$f")"
	done
	for f in share/man/man1/mxsend.1 share/man/man5/mxsend.conf.5 share/doc/mxsend/mxsend.conf.example \
		share/doc/mxsend/mxsend.acl lib/systemd/system/mxsend.service lib/sysusers.d/mxsend.conf; do
		assert_eq "$f mode" 644 "$(mode "$ROOT$PREFIX/$f" 2>&1)"
	done
	assert_file_eq "the example config" "$EXAMPLE" "$ROOT$PREFIX/share/doc/mxsend/mxsend.conf.example"
	# the config: from the example, not world-readable (it may hold passwords)
	assert_eq "config mode" 640 "$(mode "$ROOT/etc/mxsend/mxsend.conf")"
	assert_file_eq "the config" "$EXAMPLE" "$ROOT/etc/mxsend/mxsend.conf"
	# the unit runs the installed binary on the installed config
	assert_match "ExecStart" "^ExecStart=$PREFIX/bin/mxsend run -c /etc/mxsend/mxsend.conf\$" \
		"$(cat "$ROOT$PREFIX/lib/systemd/system/mxsend.service")"
	assert_match "sysusers: the user mxsend" '^u mxsend - ' "$(cat "$ROOT$PREFIX/lib/sysusers.d/mxsend.conf")"
	# installing again keeps a config the operator changed
	echo "; mine" >>"$ROOT/etc/mxsend/mxsend.conf"
	mk install DESTDIR="$ROOT" || fail "second make install failed"
	assert_match "second install: config kept" '^; mine$' "$(cat "$ROOT/etc/mxsend/mxsend.conf")"
	assert_match "second install says so" 'mxsend.conf exists: kept' "$(cat "$CASE_DIR/make.log")"
	# nothing outside the DESTDIR: every path written is under it
	assert_eq "files outside usr/local and etc/mxsend" "" \
		"$(cd "$ROOT" && find . -type f | grep -Ev '^\./(usr/local|etc/mxsend)/')"
}

t_version() {
	installed || return 1
	local out
	out=$("$ROOT$PREFIX/bin/mxsend" --version 2>&1)
	assert_eq "exit status" 0 "$?"
	assert_match "mxsend's version" '^mxsend [0-9]+\.[0-9]+\.[0-9]+$' "$(head -n 1 <<<"$out")"
	assert_match "liburing: compiled and loaded" '^liburing 2\.[0-9]+ \(run-time: liburing\.so\.2\.[0-9]+; kernel ' "$out"
	assert_match "OpenSSL: compiled and run-time" '^OpenSSL 3\.[0-9.]+ \(run-time: 3\.[0-9.]+\)$' "$out"
	assert_match "c-ares" '^c-ares 1\.[0-9.]+ \(run-time: 1\.[0-9.]+\)$' "$out"
	assert_match "hiredis: compiled and loaded" '^hiredis [0-9]+\.[0-9]+\.[0-9]+ \(run-time: libhiredis\.so\.' "$out"
	# the man pages carry the same version (Makefile VERSION; .TH line)
	local v
	v=$(head -n 1 <<<"$out")
	assert_match "mxsend.1 .TH: $v" "^\.TH .*\"$v\"" "$(cat "$MAN1")"
	assert_match "mxsend.conf.5 .TH: $v" "^\.TH .*\"$v\"" "$(cat "$MAN5")"
	assert_match "usage names --version" 'mxsend --version' "$("$ROOT$PREFIX/bin/mxsend" --help 2>&1)"
}

# render FILE: man -l with warnings on; stdout in $CASE_DIR/NAME.txt, stderr
# must be empty.
render() {
	local name
	name=$(basename "$1")
	MANWIDTH=100 timeout 20 man --warnings=w -l "$1" >"$CASE_DIR/$name.txt" 2>"$CASE_DIR/$name.err"
	assert_eq "man -l $name: exit status" 0 "$?"
	assert_eq "man -l $name: warnings" "" "$(cat "$CASE_DIR/$name.err")"
	assert_ge "man -l $name: lines" 50 "$(wc -l <"$CASE_DIR/$name.txt")"
}

# block FILE KIND NAME: the source lines of one command's or section's block
# (from '.\" ---- KIND: NAME ----' to the next such line).
block() {
	awk -v h=".\\\\\" ---- $2: $3 ----" '
		index($0, ".\\\" ---- ") == 1 { on = ($0 == h) ; next } on' "$1"
}

# tp_items: the item lines of troff source on stdin (the line after each .TP).
tp_items() { awk 'p { print; p = 0 } /^\.TP/ { p = 1 }'; }

t_man1() {
	installed || return 1
	render "$ROOT$PREFIX/share/man/man1/mxsend.1"
	# every command of `mxsend --help` has its block, and every flag of its
	# usage has an item (the line after a .TP, troff source: \-\-flag) there
	# (a common flag: named there, described under COMMON OPTIONS)
	local cmds cmd usage flags f items common re
	cmds=$("$MXSEND" --help 2>&1 | sed -n 's/^  mxsend \([a-z]*\) .*/\1/p')
	assert_ge "commands in mxsend --help" 7 "$(wc -w <<<"$cmds")"
	common=$(sed -n '/^\.SH COMMON OPTIONS/,/^\.SH COMMANDS/p' "$MAN1" | tp_items)
	for f in -c --config --dns --ca --port --helo --log -v --help; do
		re=${f//-/'\\-'}
		grep -qE -- "(^|[ \"])$re([ \",]|\$)" <<<"$common" || fail "mxsend.1: COMMON OPTIONS: no $f"
	done
	for cmd in $cmds; do
		grep -q "^\\.SS \"mxsend $cmd " "$MAN1" || fail "mxsend.1: no .SS for command $cmd"
		items=$(block "$MAN1" command "$cmd" | tp_items)
		[ -n "$items" ] || { fail "mxsend.1: no block for command $cmd"; continue; }
		usage=$("$MXSEND" "$cmd" --help 2>&1)
		flags=$(grep -oE '(^|[[ ])--?[a-zA-Z][a-zA-Z-]*' <<<"$usage" | sed 's/^[[ ]//' | sort -u)
		for f in $flags; do
			re=${f//-/'\\-'} # troff source: \-\-flag
			grep -qE -- "(^|[ \"])$re([ \",]|\$)" <<<"$items" ||
				fail "mxsend.1: command $cmd: flag $f has no item in its block"
		done
	done
	assert_match "--version described" '^\.SS "mxsend \\-\\-version"' "$(cat "$MAN1")"
}

# config_keys: every key sender/config.c accepts (its k_* tables, the
# [timeouts] TO() entries, and the keys compared by name: [source], [pool NAME]).
config_keys() {
	{
		awk '/^static const struct key k_[a-z_]*\[\] = \{/ { t = 1; next } t && /^\};/ { t = 0 } t' "$CONFIG_C" |
			grep -oE '\{ "[a-z_]+",|TO\([a-z_]+\)' | sed -E 's/^\{ "([a-z_]+)",$/\1/; s/^TO\(([a-z_]+)\)$/\1/'
		grep -oE 'strcmp\(name, "[a-z_]+"\)' "$CONFIG_C" | sed -E 's/.*"([a-z_]+)".*/\1/'
	} | sort -u
}

# config_sections: every global section of sender/config.c's sections[] table,
# one a line (every `{ "NAME", k_TABLE, ARRAY_LEN(...) }` of each line).
config_sections() {
	awk '/^} sections\[\] = \{/ { t = 1; next } t && /^\};/ { t = 0 } t' "$CONFIG_C" |
		grep -oE '\{ "[a-z_]+", k_[a-z_]+, ARRAY_LEN' | sed -E 's/^\{ "([a-z_]+)".*/\1/'
}

t_man5() {
	installed || return 1
	render "$ROOT$PREFIX/share/man/man5/mxsend.conf.5"
	local keys k s secs
	keys=$(config_keys)
	assert_ge "keys found in sender/config.c" 60 "$(wc -l <<<"$keys")"
	for k in $keys; do
		grep -qE "^\\.BI \"$k = " "$MAN5" || fail "mxsend.conf.5: key $k not described"
		grep -qE "^;?[[:space:]]*${k}[[:space:]]*=" "$EXAMPLE" || fail "mxsend.conf.example: key $k missing"
	done
	# every global section of config.c's table (all of each line's entries: the
	# table pairs some on one line), and the named ones
	secs=$(config_sections)
	assert_ge "global sections found in sender/config.c" 8 "$(wc -l <<<"$secs")"
	for s in $secs "source NAME" "pool NAME" "domain PATTERN" "mx PATTERN" "dkim DOMAIN"; do
		grep -qF -- "[$s]" <(grep '^\.SS' "$MAN5") || fail "mxsend.conf.5: no section [$s]"
	done
}

t_unit() {
	installed || return 1
	local u=$ROOT$PREFIX/lib/systemd/system/mxsend.service d
	local want
	for want in NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes User=mxsend \
		Restart=on-failure KillSignal=SIGTERM 'LimitNOFILE=[0-9]+' 'TimeoutStopSec=[0-9]+s' \
		RestartPreventExitStatus=78; do
		assert_match "unit: $want" "^$want\$" "$(cat "$u")"
	done
	# long enough for a clean stop: `mxsend run` drains 10 s, then commits 5 s
	local t
	t=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s$/\1/p' "$u")
	assert_ge "TimeoutStopSec (s)" 20 "$t"
	if ! command -v systemd-analyze >/dev/null 2>&1; then
		echo "# t_unit: systemd-analyze verify skipped: no systemd-analyze (systemd not installed)" >>"$INTEG_DIR/skips"
		return 0
	fi
	# verify resolves ExecStart and the man: links on this machine: point them
	# at the DESTDIR copies (the unit otherwise as installed)
	d=$CASE_DIR/units
	mkdir -p "$d"
	sed "s|^ExecStart=$PREFIX/|ExecStart=$ROOT$PREFIX/|" "$u" >"$d/mxsend.service"
	MANPATH=$ROOT$PREFIX/share/man timeout 60 systemd-analyze verify "$d/mxsend.service" >"$CASE_DIR/verify.log" 2>&1
	assert_eq "systemd-analyze verify: exit status" 0 "$?"
	assert_eq "systemd-analyze verify: output" "" "$(cat "$CASE_DIR/verify.log")"
	# systemd looks where the default PREFIX puts the unit
	assert_match "unit dir in systemd's search path" "^$PREFIX/lib/systemd/system\$" \
		"$(timeout 20 systemd-analyze unit-paths 2>&1)"
	# the sandbox as systemd rates it (a figure: lower is better, 10 is none)
	MANPATH=$ROOT$PREFIX/share/man timeout 60 systemd-analyze security --offline=yes "$d/mxsend.service" \
		>"$CASE_DIR/security.log" 2>&1
	echo "# systemd-analyze security: $(grep -E 'Overall exposure level' "$CASE_DIR/security.log" | sed 's/.*: *//')" \
		>>"$INTEG_DIR/figures"
}

t_uninstall() {
	local r=$INTEG_DIR/root2
	installed "$r" || return 1
	mk uninstall DESTDIR="$r" || fail "make uninstall failed"
	assert_eq "files left but the config" "./etc/mxsend/mxsend.conf" "$(cd "$r" && find . -type f)"
	assert_match "uninstall says the config stays" 'kept .*/etc/mxsend/mxsend.conf' "$(cat "$CASE_DIR/make.log")"
}

run_case "make install DESTDIR: programs, man pages, docs, unit, sysusers, config 0640 from the example and kept on reinstall; nothing else" t_tree
run_case "installed mxsend --version: its version, liburing, OpenSSL, c-ares, hiredis compiled and loaded" t_version
run_case "mxsend(1): man -l without warnings; every command and flag of mxsend --help described" t_man1
run_case "mxsend.conf(5): man -l without warnings; every section and key of config.c described, every key in the example" t_man5
run_case "mxsend.service: sandbox, restart, SIGTERM and stop timeout; systemd-analyze verify passes" t_unit
run_case "make uninstall removes what install wrote, keeps the config" t_uninstall
[ -s "$INTEG_DIR/skips" ] && cat "$INTEG_DIR/skips"
[ -s "$INTEG_DIR/figures" ] && cat "$INTEG_DIR/figures"
integ_finish

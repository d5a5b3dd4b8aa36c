#!/usr/bin/env bash
# t_send.sh: `mxsend send` against real unbound and mxsink processes on loopback.
# The delivery core: MX selection, DNS failures, TLS levels and certificates,
# per-recipient replies, byte-exact bodies, and the command's exit statuses
# (servers that refuse at the greeting or stall: t_hostile.sh). Whole file:
# well under a minute.
# shellcheck disable=SC2317,SC2031 # case functions run indirectly, each in its run_case subshell
set -u
# shellcheck source=tests/integ/lib.sh
. "$(dirname "$0")/lib.sh"

# Every name a case verifies is listed: the certificate's *.test SAN never
# matches in OpenSSL (a wildcard needs two labels after it).
integ_setup mx1.test mx2.test mx3.test mx4.test mx5.test mx6.test mx9.test \
	amx.test mxbody.test mxbodyc.test
integ_require mxsend mxsink unbound unbound-checkconf perl ss timeout

FROM=sender@client.test
P=$SINK_PORT

# --- DNS: one zone for every case ------------------------------------------
ZONE=$INTEG_DIR/zone.txt
{
	cat <<'EOF'
; MX hosts (127.0.3.9 = mx9.test: nothing listens there)
mx1.test. A 127.0.3.1
mx2.test. A 127.0.3.2
mx3.test. A 127.0.3.3
mx4.test. A 127.0.3.4
mx5.test. A 127.0.3.5
mx6.test. A 127.0.3.6
mx9.test. A 127.0.3.9
mxbody.test. A 127.0.3.10
mxbodyc.test. A 127.0.3.11
; recipient domains
ok.test. MX 10 mx1.test.
pref.test. MX 10 mx9.test.
pref.test. MX 20 mx1.test.
two.test. MX 10 mx1.test.
two.test. MX 20 mx2.test.
owt.test. MX 20 mx1.test.
owt.test. MX 10 mx2.test.
amx.test. A 127.0.3.1
null.test. MX 0 .
notls.test. MX 10 mx3.test.
wrong.test. MX 10 mx4.test.
expired.test. MX 10 mx5.test.
mixed.test. MX 10 mx6.test.
body.test. MX 10 mxbody.test.
bodyc.test. MX 10 mxbodyc.test.
; servfail.test. (SERVFAIL) is built into start_unbound
EOF
} >"$ZONE"
start_unbound "$ZONE" || integ_missing "unbound did not start"

# --- SMTP sinks: one port, one address (range) per behaviour ----------------
if [ -x "$MXSINK" ] && [ -s "$CA" ]; then
	start_sink good --listen "127.0.3.1-127.0.3.2:$P" || integ_missing "sink good"
	start_sink notls --listen "127.0.3.3:$P" --no-starttls || integ_missing "sink notls"
	start_sink wrong --listen "127.0.3.4:$P" --cert "$CERTS/wrong.pem" --key "$CERTS/wrong.key" \
		--threads 1 || integ_missing "sink wrong"
	start_sink expired --listen "127.0.3.5:$P" --cert "$CERTS/expired.pem" --key "$CERTS/expired.key" \
		--threads 1 || integ_missing "sink expired"
	start_sink mixed --listen "127.0.3.6:$P" \
		--rcpt 'temp*=450 4.2.0 later' --rcpt 'bad*=550 5.1.1 unknown' \
		--rcpt $'esc*=550 5.7.1 no\e]0;pwned\a\e[31mred\b\x7f"q"\\x' || integ_missing "sink mixed"
	start_sink body --listen "127.0.3.10:$P" || integ_missing "sink body"
	start_sink bodyc --listen "127.0.3.11:$P" --chunking || integ_missing "sink bodyc"
fi

# --- configs ------------------------------------------------------------------
CONF=$INTEG_DIR/send.ini
integ_config "$CONF" $'[timeouts]\nconnect = 2s\nbanner = 5s\nhelo = 5s\nstarttls = 5s\nmail = 5s\nrcpt = 5s\ndata = 5s\nblock = 5s\ndot = 5s\nrset = 5s\nquit = 5s'

# --- helpers --------------------------------------------------------------------

# send (lib.sh): `mxsend send ARG...`, 10 s bound: a normal case takes well
# under a second, and even a hang in every case keeps the file under run.sh's
# 600 s limit. msg (lib.sh): a small LF message.
SEND_LIMIT=10
FIG=$INTEG_DIR/figures # measured figures, printed at the end (reported, not asserted)
: >"$FIG"
# send, mx, show_run, expect_rc, expect_line: lib.sh.

# Common tails of a result line.
NOMX='mx=- tls=none cipher=- verified=no policy=[a-z-]+ reply="[^"]*"'
TLS13Y='tls=TLSv1\.3 cipher=[A-Za-z0-9_-]+ verified=yes'
TLSANY_N='tls=TLSv1\.[23] cipher=[A-Za-z0-9_-]+ verified=no'
PLAIN='tls=none cipher=- verified=no'
REPLY='reply="[^"]*"'
D250='delivered 250 2\.[0-9]{1,3}\.[0-9]{1,3}'
DEF='deferred 4[0-9]{2} 4\.[0-9]{1,3}\.[0-9]{1,3}'
BNC='bounced 5[0-9]{2} 5\.[0-9]{1,3}\.[0-9]{1,3}'

# --- 1. TLS 1.3, verified, message in the maildir ------------------------------
t_tls13_verified() {
	local m=$CASE_DIR/m.eml exp=$CASE_DIR/exp.eml got
	msg "$m" tls13
	# flags only, no config file: --dns, --ca, --port, --helo
	send --dns "$DNS" --ca "$CA" --port "$P" --helo flag.client.test --from "$FROM" --to u1@ok.test "$m"
	expect_rc 0
	expect_line u1@ok.test "$D250 $(mx mx1.test 127.0.3.1) $TLS13Y policy=may $REPLY"
	got=$(sink_find_msg good u1@ok.test) || {
		fail "sink good has no message for u1@ok.test"
		find "$(sink_maildir good)" -type f | sed 's/^/# /'
		return 1
	}
	wire_expect "$m" "$exp"
	assert_file_eq "message at the sink" "$exp" "$got"
	assert_match "sink saw the envelope sender" "^mail=<?$(re_escape "$FROM")>?\$" "$(cat "${got%.eml}.env")"
	assert_match "sink saw the --helo name" '^helo=flag\.client\.test$' "$(cat "${got%.eml}.env")"
}
run_case "TLS 1.3 with verified=yes (--ca), message in the sink's maildir" t_tls13_verified

t_sni() {
	local m=$CASE_DIR/m.eml got
	msg "$m" sni
	send -c "$CONF" --from "$FROM" --to u-sni@ok.test "$m"
	expect_rc 0 || return 1
	got=$(sink_find_msg good u-sni@ok.test) || fail "sink good has no message for u-sni@ok.test" || return 1
	assert_match "SNI sent is the MX host name" '^sni=mx1\.test$' "$(cat "${got%.eml}.env")"
	assert_match "TLS version seen by the sink" '^tls=(TLSv)?1\.3$' "$(cat "${got%.eml}.env")"
	assert_match "sink saw the config's helo name" '^helo=client\.test$' "$(cat "${got%.eml}.env")"
}
run_case "SNI is the MX host name; the sink saw TLS 1.3" t_sni

# --- the system trust store (no --ca, no ca_file) --------------------------------
# STORE: dir (SSL_CERT_DIR: a hashed directory, read lazily, SSL_CERT_FILE unset),
# file (SSL_CERT_FILE: a PEM bundle), or empty (SSL_CERT_DIR: a directory without
# the run's CA). The caller's own SSL_CERT_* variables are dropped.
t_system_store() { # STORE
	local m=$CASE_DIR/m.eml d=$CASE_DIR/certs
	msg "$m" "store $1"
	mkdir -p "$d"
	[ "$1" = empty ] || cp "$CA" "$d/ca.pem"
	openssl rehash "$d" 2>/dev/null || fail "openssl rehash $d" || return 1
	local envs=(-u SSL_CERT_FILE -u SSL_CERT_DIR)
	case $1 in
	dir | empty) envs+=("SSL_CERT_DIR=$d") ;;
	file) envs+=("SSL_CERT_FILE=$d/ca.pem" "SSL_CERT_DIR=$CASE_DIR/none") ;;
	esac
	timed_run "$SEND_LIMIT" "$CASE_DIR/out" "$CASE_DIR/err" env "${envs[@]}" "$MXSEND" send \
		--dns "$DNS" --port "$P" --tls verify --from "$FROM" --to "u-store-$1@ok.test" "$m"
	if [ "$1" = empty ]; then
		expect_rc 75
		expect_line "u-store-$1@ok.test" "$DEF $(mx mx1.test 127.0.3.1) $TLSANY_N policy=verify reply=\"[^\"]*certificate[^\"]*\""
	else
		expect_rc 0
		expect_line "u-store-$1@ok.test" "$D250 $(mx mx1.test 127.0.3.1) $TLS13Y policy=verify $REPLY"
	fi
}
run_case "system store, hashed directory (SSL_CERT_DIR): --tls verify delivered, verified=yes" t_system_store dir
run_case "system store, bundle file (SSL_CERT_FILE): --tls verify delivered, verified=yes" t_system_store file
run_case "system store without the CA: --tls verify deferred, verified=no" t_system_store empty

# One 4 KB message, five times: each must be delivered over verified TLS 1.3. The wall time of
# the whole command (start, config, CA file, DNS, connect, handshake, transaction, QUIT, exit)
# is reported, not asserted (the machine is shared): the figure issue 2 asks for.
t_send_4k_wall() {
	local m=$CASE_DIR/m.eml ms=() i
	{
		printf 'From: %s\nTo: u-4k@ok.test\nSubject: 4 KB\n\n' "$FROM"
		for i in $(seq 61); do printf 'Line %02d of a 4 KB message: lorem ipsum dolor sit amet, consectet.\n' "$i"; done
	} >"$m"
	assert_ge "message size" 3900 "$(stat -c %s "$m")" || return 1
	for i in 1 2 3 4 5; do
		send -c "$CONF" --tls verify --from "$FROM" --to "u-4k-$i@ok.test" "$m"
		expect_rc 0 || return 1
		expect_line "u-4k-$i@ok.test" "$D250 $(mx mx1.test 127.0.3.1) $TLS13Y policy=verify $REPLY" || return 1
		ms+=("$RUN_MS")
	done
	echo "mxsend send, one 4 KB message: $(printf '%s\n' "${ms[@]}" | sort -n | sed -n 3p) ms wall (median of 5: ${ms[*]} ms)" >>"$FIG"
}
run_case "one 4 KB message, verified TLS 1.3, five times (wall time reported)" t_send_4k_wall

# --- 2. MX preference --------------------------------------------------------------
t_mx_refused_next() {
	local m=$CASE_DIR/m.eml
	msg "$m"
	send -c "$CONF" --from "$FROM" --to u@pref.test "$m"
	expect_rc 0
	expect_line u@pref.test "$D250 $(mx mx1.test 127.0.3.1) $TLS13Y policy=may $REPLY"
}
run_case "MX 10 refuses connections: delivered via MX 20" t_mx_refused_next

t_mx_pref_order() {
	local m=$CASE_DIR/m.eml
	msg "$m"
	send -c "$CONF" --from "$FROM" --to u@two.test "$m"
	expect_rc 0
	expect_line u@two.test "$D250 $(mx mx1.test 127.0.3.1) $TLS13Y policy=may $REPLY"
	# the same with the preferences the other way round
	send -c "$CONF" --from "$FROM" --to u@owt.test "$m"
	expect_rc 0
	expect_line u@owt.test "$D250 $(mx mx2.test 127.0.3.2) $TLS13Y policy=may $REPLY"
}
run_case "two working MX: delivered via the lower preference" t_mx_pref_order

# --- 3. implicit MX ---------------------------------------------------------------
t_implicit_mx() {
	local m=$CASE_DIR/m.eml
	msg "$m"
	send -c "$CONF" --from "$FROM" --to u@amx.test "$m"
	expect_rc 0
	expect_line u@amx.test "$D250 $(mx amx.test 127.0.3.1) $TLS13Y policy=may $REPLY"
}
run_case "implicit MX (A record only)" t_implicit_mx

# --- 4-6. DNS failures ------------------------------------------------------------
t_null_mx() {
	local m=$CASE_DIR/m.eml
	msg "$m"
	send -c "$CONF" --from "$FROM" --to u@null.test "$m"
	expect_rc 69
	expect_line u@null.test "bounced 556 5\.1\.10 $NOMX"
	expect_class u@null.test invalid-recipient
}
run_case "null MX: bounced 556 5.1.10, exit 69" t_null_mx

t_nxdomain() {
	local m=$CASE_DIR/m.eml
	msg "$m"
	send -c "$CONF" --from "$FROM" --to u@nosuch.test "$m"
	expect_rc 69
	expect_line u@nosuch.test "$BNC $NOMX"
	expect_class u@nosuch.test dns
}
run_case "NXDOMAIN: bounced, exit 69" t_nxdomain

t_servfail() {
	local m=$CASE_DIR/m.eml
	msg "$m"
	send -c "$CONF" --from "$FROM" --to u@servfail.test "$m"
	expect_rc 75
	expect_line u@servfail.test "$DEF $NOMX"
	expect_class u@servfail.test dns
}
run_case "SERVFAIL: deferred, exit 75" t_servfail

# --- 7. no STARTTLS offered ---------------------------------------------------------
t_notls() { # LEVEL
	local m=$CASE_DIR/m.eml
	msg "$m"
	send -c "$CONF" --tls "$1" --from "$FROM" --to "u-$1@notls.test" "$m"
	if [ "$1" = may ]; then
		expect_rc 0
		expect_line "u-$1@notls.test" "$D250 $(mx mx3.test 127.0.3.3) $PLAIN policy=may $REPLY"
	else
		expect_rc 75
		expect_line "u-$1@notls.test" "$DEF $(mx mx3.test 127.0.3.3) $PLAIN policy=$1 $REPLY"
		expect_class "u-$1@notls.test" tls
	fi
}
run_case "no STARTTLS offered, --tls may: delivered, tls=none" t_notls may
run_case "no STARTTLS offered, --tls encrypt: deferred, exit 75" t_notls encrypt
run_case "no STARTTLS offered, --tls verify: deferred, exit 75" t_notls verify

# --- 8. certificates that do not verify --------------------------------------------
t_badcert() { # DOMAIN MXHOST IP LEVEL
	local m=$CASE_DIR/m.eml d=$1 host=$2 ip=$3 lvl=$4
	msg "$m"
	send -c "$CONF" --tls "$lvl" --from "$FROM" --to "u-$lvl@$d" "$m"
	if [ "$lvl" = may ]; then
		expect_rc 0
		expect_line "u-$lvl@$d" "$D250 $(mx "$host" "$ip") $TLSANY_N policy=may $REPLY"
	else
		expect_rc 75
		# the version and cipher negotiated before the certificate was refused (README)
		expect_line "u-$lvl@$d" "$DEF $(mx "$host" "$ip") tls=TLSv1\.[23] cipher=[A-Z0-9_-]+ verified=no policy=verify $REPLY"
		expect_class "u-$lvl@$d" tls
	fi
}
run_case "certificate name mismatch, --tls may: delivered, verified=no" t_badcert wrong.test mx4.test 127.0.3.4 may
run_case "certificate name mismatch, --tls verify: deferred, exit 75" t_badcert wrong.test mx4.test 127.0.3.4 verify
run_case "expired certificate, --tls may: delivered, verified=no" t_badcert expired.test mx5.test 127.0.3.5 may
run_case "expired certificate, --tls verify: deferred, exit 75" t_badcert expired.test mx5.test 127.0.3.5 verify

# --- 9. per-recipient RCPT replies in one transaction -------------------------------
t_mixed_rcpt() {
	local m=$CASE_DIR/m.eml got env
	msg "$m" mixed
	send -c "$CONF" --from "$FROM" --to good1@mixed.test --to temp1@mixed.test --to bad1@mixed.test "$m"
	expect_rc 69
	expect_line good1@mixed.test "$D250 $(mx mx6.test 127.0.3.6) $TLS13Y policy=may $REPLY"
	expect_line temp1@mixed.test "deferred 450 4\.2\.0 $(mx mx6.test 127.0.3.6) $TLS13Y policy=may reply=\"[^\"]*later\""
	expect_line bad1@mixed.test "bounced 550 5\.1\.1 $(mx mx6.test 127.0.3.6) $TLS13Y policy=may reply=\"[^\"]*unknown\""
	# bounce classes (README): from the rule file; none on a delivered line
	expect_class bad1@mixed.test invalid-recipient
	expect_class temp1@mixed.test other
	expect_class good1@mixed.test -
	assert_eq "lines on stdout" 3 "$(grep -c . "$CASE_DIR/out")"
	got=$(sink_find_msg mixed good1@mixed.test) || fail "sink mixed has no message for good1" || return 1
	env=$(cat "${got%.eml}.env")
	assert_eq "messages in the sink's maildir" 1 "$(sink_count mixed)"
	assert_eq "accepted recipients of the message" 1 "$(grep -c '^rcpt=' <<<"$env")"
	assert_eq "sink messages counter" 1 "$(sink_stat mixed messages)"
	assert_eq "sink recipients counter" 1 "$(sink_stat mixed recipients)"
	assert_eq "sink connections (one transaction)" 1 "$(sink_stat mixed connections)"
}
run_case "RCPT 250/450/550 in one transaction: three statuses, exit 69, one message" t_mixed_rcpt

# --- 10. byte-exact bodies -------------------------------------------------------------
# body_gen (lib.sh) writes the input message of each body case.
t_body() { # SINK DOMAIN KIND [stdin]
	local sink=$1 dom=$2 kind=$3 m=$CASE_DIR/in.eml exp=$CASE_DIR/exp.eml got rcpt
	rcpt="b-$kind-$sink@$dom"
	body_gen "$kind" "$m"
	wire_expect "$m" "$exp"
	if [ "${4:-}" = stdin ]; then
		timed_run "$SEND_LIMIT" "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" send -c "$CONF" --from "$FROM" --to "$rcpt" - <"$m"
	else
		send -c "$CONF" --from "$FROM" --to "$rcpt" "$m"
	fi
	expect_rc 0 || return 1
	expect_line "$rcpt" "$D250 mx=.* $TLS13Y policy=may $REPLY"
	got=$(sink_find_msg "$sink" "$rcpt") || fail "sink $sink has no message for $rcpt" || return 1
	assert_file_eq "message at the sink" "$exp" "$got"
}
run_case "body: lines starting with '.', lone '.', '..'" t_body body body.test dots
run_case "body: bare LF line ends become CRLF (message on stdin)" t_body body body.test lf stdin
run_case "body: mixed CRLF and LF line ends" t_body body body.test mixed-eol
run_case "body: missing final newline gets CRLF" t_body body body.test nofinal
run_case "body: missing final newline after a lone '.'" t_body body body.test nofinal-dot
run_case "body: 998-octet lines" t_body body body.test longline
run_case "body: 8-bit content (UTF-8, raw 0x80-0xff)" t_body body body.test 8bit
run_case "body: 5 MB message" t_body body body.test big
run_case "body over CHUNKING (BDAT): dot lines" t_body bodyc bodyc.test dots
run_case "body over CHUNKING (BDAT): missing final newline" t_body bodyc bodyc.test nofinal
run_case "body over CHUNKING (BDAT): 5 MB message" t_body bodyc bodyc.test big

# --- exit statuses of the command itself --------------------------------------------
t_usage() {
	local m=$CASE_DIR/m.eml
	msg "$m"
	send -c "$CONF" --from "$FROM" "$m"
	expect_rc 64
	assert_eq "stdout" "" "$(cat "$CASE_DIR/out")"
}
run_case "usage error (no --to): exit 64" t_usage

t_bad_config() {
	local m=$CASE_DIR/m.eml c=$CASE_DIR/bad.ini
	msg "$m"
	printf '[mxsend]\nhelo = client.test\nno_such_key = 1\n' >"$c"
	send -c "$c" --from "$FROM" --to u@ok.test "$m"
	expect_rc 78
	assert_match "stderr names file:line" 'bad\.ini:3([^0-9]|$)' "$(cat "$CASE_DIR/err")" || show_run
}
run_case "unknown config key: exit 78, file:line on stderr" t_bad_config

t_unreadable_message() {
	send -c "$CONF" --from "$FROM" --to u@ok.test "$CASE_DIR/does-not-exist.eml"
	# EX_NOINPUT, as sender/cmd/send.c documents (DESIGN.md's list has no 66)
	expect_rc 66
	assert_eq "stdout" "" "$(cat "$CASE_DIR/out")"
}
run_case "unreadable message file: exit 66" t_unreadable_message

t_bad_message() { # empty | address
	local m=$CASE_DIR/m.eml to=u@ok.test
	if [ "$1" = empty ]; then
		: >"$m"
	else
		msg "$m"
		to=no-at-sign.ok.test
	fi
	send -c "$CONF" --from "$FROM" --to "$to" "$m"
	expect_rc 65
	assert_eq "stdout" "" "$(cat "$CASE_DIR/out")"
	assert_eq "sink good connections before and after" "$2" "$(sink_stat good connections)"
}
run_case "empty message: exit 65, nothing sent" t_bad_message empty "$(sink_stat good connections)"
run_case "bad recipient address: exit 65, nothing sent" t_bad_message address "$(sink_stat good connections)"

# --- 11. content that could be read differently downstream --------------------------
# SMTP smuggling: a bare CR (and "\r.\r") in a message must reach the server as
# CRLF (and "..": dot-stuffed on DATA), so the server sees ONE message whose
# body still holds the would-be commands as text. body: DATA (no CHUNKING);
# bodyc: BDAT.
t_smuggle() { # SINK DOMAIN
	local sink=$1 dom=$2 m=$CASE_DIR/in.eml exp=$CASE_DIR/exp.eml got rcpt before
	rcpt="smuggle-$sink@$dom"
	printf 'Subject: smuggle\r\n\r\nhello\r.\rMAIL FROM:<x@y>\r\nRCPT TO:<victim-%s@%s>\r\nDATA\r\nevil\r\n\n.\r\nmore\rend\r\n' \
		"$sink" "$dom" >"$m"
	wire_expect "$m" "$exp"
	before=$(sink_stat "$sink" messages)
	send -c "$CONF" --from "$FROM" --to "$rcpt" "$m"
	expect_rc 0 || return 1
	expect_line "$rcpt" "$D250 mx=.* $TLS13Y policy=may $REPLY"
	got=$(sink_find_msg "$sink" "$rcpt") || fail "sink $sink has no message for $rcpt" || return 1
	assert_eq "sink messages counter: one message more" "$((before + 1))" "$(sink_stat "$sink" messages)"
	assert_file_eq "message at the sink (bare CR became CRLF)" "$exp" "$got"
	assert_match "the would-be commands are body text" $'^MAIL FROM:<x@y>\r$' "$(cat "$got")"
	assert_eq "no message for the smuggled recipient" "" \
		"$(sink_find_msg "$sink" "victim-$sink@$dom" 1)"
	assert_eq "bare CR or bare LF in the stored copy" 0 \
		"$(perl -0777 -ne 'print scalar(() = /\r(?!\n)|(?<!\r)\n/g)' "$got")"
}
run_case "no smuggling, DATA: '\\r.\\r' and commands after it stay in one message" t_smuggle body body.test
run_case "no smuggling, BDAT: '\\r.\\r' and commands after it stay in one message" t_smuggle bodyc bodyc.test

# Content SMTP cannot carry as given is refused before anything is sent: exit
# 65 naming the problem and the line.
t_bad_content() { # nul | long
	local m=$CASE_DIR/m.eml before
	before=$(sink_stat good connections)
	if [ "$1" = nul ]; then
		printf 'Subject: nul\n\nline 3 \0 here\n' >"$m"
	else
		{
			printf 'Subject: long\n\nshort\n'
			head -c 998 /dev/zero | tr '\0' 'x'
			printf '\n'
			head -c 999 /dev/zero | tr '\0' 'y'
			printf '\r\nend\n'
		} >"$m"
	fi
	send -c "$CONF" --from "$FROM" --to u-content@ok.test "$m"
	expect_rc 65
	assert_eq "stdout" "" "$(cat "$CASE_DIR/out")"
	if [ "$1" = nul ]; then
		assert_match "stderr names the NUL and its line" 'NUL byte at line 3$' "$(cat "$CASE_DIR/err")"
	else
		assert_match "stderr names the long line" 'line 5 exceeds 998 octets$' "$(cat "$CASE_DIR/err")"
	fi
	assert_eq "sink good connections before and after" "$before" "$(sink_stat good connections)"
}
run_case "NUL byte in the message: exit 65 naming line 3, nothing sent" t_bad_content nul
run_case "999-octet line: exit 65 naming line 5, nothing sent" t_bad_content long

# A server's reply holding ESC, BEL, BS, DEL, quotes and a backslash reaches
# the terminal escaped, never raw.
t_reply_escaped() {
	local m=$CASE_DIR/m.eml
	msg "$m" escape
	send -c "$CONF" --log info --from "$FROM" --to esc1@mixed.test "$m"
	expect_rc 69
	expect_line esc1@mixed.test "bounced 550 5\.7\.1 $(mx mx6.test 127.0.3.6) $TLS13Y policy=may reply=\"[^\"]*$(re_escape 'no\x1b]0;pwned\x07\x1b[31mred\x08\x7f\"q\"\\x')\""
	assert_eq "raw control bytes on stdout" 0 "$(tr -d '\n' <"$CASE_DIR/out" | LC_ALL=C tr -cd '\000-\037\177' | wc -c)"
	# the log lines (stderr, --log info): the same text, quotes and backslash escaped too
	assert_match "evt=delivery line, reply escaped" \
		"evt=delivery .*rcpt=\"esc1@mixed.test\" status=bounced .*reply=\"[^\"]*$(re_escape 'no\x1b]0;pwned\x07\x1b[31mred\x08\x7f\"q\"\\x')\" class=policy$" \
		"$(cat "$CASE_DIR/err")"
	expect_class esc1@mixed.test policy
	assert_eq "raw control bytes on stderr" 0 "$(tr -d '\n' <"$CASE_DIR/err" | LC_ALL=C tr -cd '\000-\037\177' | wc -c)"
}
run_case "reply with ESC/BEL/BS/DEL: printed escaped (\\x1b, \\x07, ...), no raw control byte" t_reply_escaped

# --helo and --dns are checked as the config file's helo and dns are: a usage
# error (exit 64), nothing sent.
t_bad_flag() { # helo | dns
	local m=$CASE_DIR/m.eml before
	msg "$m" flag
	before=$(sink_stat good connections)
	if [ "$1" = helo ]; then
		send -c "$CONF" --helo $'a\r\nMAIL FROM:<x@y>' --from "$FROM" --to u-flag@ok.test "$m"
	else
		send --dns 127.0.0.1:70000 --ca "$CA" --port "$P" --from "$FROM" --to u-flag@ok.test "$m"
	fi
	expect_rc 64
	assert_match "stderr names the flag" "bad --$1" "$(cat "$CASE_DIR/err")"
	assert_eq "stdout" "" "$(cat "$CASE_DIR/out")"
	assert_eq "sink good connections before and after" "$before" "$(sink_stat good connections)"
}
run_case "--helo with CR LF: exit 64, nothing sent" t_bad_flag helo
run_case "--dns 127.0.0.1:70000: exit 64, nothing sent" t_bad_flag dns

# An address literal recipient is refused at parse time, not bounced as NXDOMAIN.
t_literal() { # ADDR
	local m=$CASE_DIR/m.eml
	msg "$m" literal
	send -c "$CONF" --from "$FROM" --to "$1" "$m"
	expect_rc 65
	assert_match "stderr says why" 'address literals are not supported' "$(cat "$CASE_DIR/err")"
	assert_eq "stdout" "" "$(cat "$CASE_DIR/out")"
}
run_case "recipient u@[127.0.3.1]: exit 65, address literals are not supported" t_literal 'u@[127.0.3.1]'
run_case "recipient u@[IPv6:::1]: exit 65, address literals are not supported" t_literal 'u@[IPv6:::1]'

sed 's/^/# /' "$FIG"
integ_finish

#!/usr/bin/env bash
# t_hostile.sh: `mxsend send` against servers that misbehave (issue 17), real
# unbound and mxsink processes on loopback:
#   1. a reply nobody asked for: a second 250 after the end of data, arriving
#      late, once the next transaction is on the wire (mxsink --extra-reply);
#      over BDAT and over DATA; the second message, refused 550, is never
#      reported delivered, and what is unknown is deferred;
#   2. the result names the MX host and address tried last;
#   3. CHUNKING offered, BDAT refused: the message goes by DATA;
#   4. tls = may and a handshake that fails (alert, TLS 1.0-only server, the
#      connection cut mid-handshake): the message goes in plaintext;
#   5. a greeting that refuses (421, 554): deferred, bounced, or the next MX;
#   6. a server that stalls at each stage: deferred within the stage's timeout.
# Addresses 127.0.90.x and 127.0.91.x (5, 6: 127.0.92.x) on SINK_PORT
# (127.0.90.9: nothing listens). Whole file: about 15 s.
# shellcheck disable=SC2317,SC2031 # case functions run indirectly, each in its run_case subshell
set -u
# shellcheck source=tests/integ/lib.sh
. "$(dirname "$0")/lib.sh"

integ_setup mx1.xb.test mx1.xd.test mx1.br.test mx1.t10.test mx1.tal.test mx1.tcut.test \
	mx1.last.test mx2.last.test mx1.test
integ_require mxsend mxsink unbound unbound-checkconf perl ss timeout redis-server redis-cli

FROM=sender@client.test
P=$SINK_PORT

# --- DNS ----------------------------------------------------------------------------
ZONE=$INTEG_DIR/zone.txt
cat >"$ZONE" <<'EOF'
xb.test. MX 10 mx1.xb.test.
mx1.xb.test. A 127.0.90.1
xd.test. MX 10 mx1.xd.test.
mx1.xd.test. A 127.0.90.2
xr.test. MX 10 mx1.xr.test.
mx1.xr.test. A 127.0.90.14
xn.test. MX 10 mx1.xn.test.
mx1.xn.test. A 127.0.90.13
xz.test. MX 10 mx1.xz.test.
mx1.xz.test. A 127.0.90.12
xi.test. MX 10 mx1.xi.test.
mx1.xi.test. A 127.0.90.11
br.test. MX 10 mx1.br.test.
mx1.br.test. A 127.0.90.3
t10.test. MX 10 mx1.t10.test.
mx1.t10.test. A 127.0.90.4
tal.test. MX 10 mx1.tal.test.
mx1.tal.test. A 127.0.90.5
tcut.test. MX 10 mx1.tcut.test.
mx1.tcut.test. A 127.0.90.6
last.test. MX 10 mx1.last.test.
last.test. MX 20 mx2.last.test.
mx1.last.test. A 127.0.90.9
mx2.last.test. A 127.0.90.7
lastg.test. MX 10 mx1.last.test.
lastg.test. MX 20 mx2.lastg.test.
mx2.lastg.test. A 127.0.90.8
; ten addresses that refuse (the cap of tries per message), then a host never reached
many.test. MX 10 mxa.many.test.
many.test. MX 20 mxb.many.test.
many.test. MX 30 mxc.many.test.
mxc.many.test. A 127.0.90.10
mxb.many.test. A 127.0.91.11
mxb.many.test. A 127.0.91.12
EOF
for i in 1 2 3 4 5 6 7 8; do
	echo "mxa.many.test. A 127.0.91.$i"
done >>"$ZONE"
# 5. greetings (MX 20 of fb*: a sink that accepts); 6. one sink per stalled stage
STALLS=(banner ehlo starttls tls mail rcpt data dot)
{
	cat <<'EOF'
mx1.test. A 127.0.92.1
mx7.test. A 127.0.92.7
mx8.test. A 127.0.92.8
g421.test. MX 10 mx7.test.
g554.test. MX 10 mx8.test.
fb421.test. MX 10 mx7.test.
fb421.test. MX 20 mx1.test.
fb554.test. MX 10 mx8.test.
fb554.test. MX 20 mx1.test.
EOF
	i=20
	for s in "${STALLS[@]}"; do
		echo "stall-$s.test. MX 10 mxs-$s.test."
		echo "mxs-$s.test. A 127.0.92.$i"
		i=$((i + 1))
	done
} >>"$ZONE"
start_unbound "$ZONE" || integ_missing "unbound did not start"

# --- sinks ----------------------------------------------------------------------------
if [ -x "$MXSINK" ] && [ -s "$CA" ]; then
	# the first message of a connection is accepted, the next ones refused at the end
	# of data; 100 ms after each final reply, an extra "250", then 100 ms more before
	# the sink reads what followed the message
	start_sink xb --listen "127.0.90.1:$P" --chunking --extra-reply 100 \
		--dot '550 5.7.1 second message refused' --dot-after 1 || integ_missing "sink xb"
	start_sink xd --listen "127.0.90.2:$P" --extra-reply 100 \
		--dot '550 5.7.1 second message refused' --dot-after 1 || integ_missing "sink xd"
	# the same as xb, RCPT answered without an enhanced status code
	start_sink xr --listen "127.0.90.14:$P" --chunking --extra-reply 100 --rcpt '*=250 accepted' \
		--dot '550 5.7.1 second message refused' --dot-after 1 || integ_missing "sink xr"
	start_sink xn --listen "127.0.90.13:$P" --no-pipelining --extra-reply 100 \
		--dot '550 5.7.1 second message refused' --dot-after 1 || integ_missing "sink xn"
	# the extra 250 in the same write as the final reply
	start_sink xz --listen "127.0.90.12:$P" --chunking --extra-reply 0 || integ_missing "sink xz"
	# the extra 250 100 ms late, every message accepted (a connection idle in the pool)
	start_sink xi --listen "127.0.90.11:$P" --chunking --extra-reply 100 || integ_missing "sink xi"
	start_sink br --listen "127.0.90.3:$P" --chunking --bdat-refuse || integ_missing "sink br"
	start_sink t10 --listen "127.0.90.4:$P" --tls-max 1.0 || integ_missing "sink t10"
	start_sink tal --listen "127.0.90.5:$P" --tls-fail=alert || integ_missing "sink tal"
	start_sink tcut --listen "127.0.90.6:$P" --tls-fail=cut || integ_missing "sink tcut"
	start_sink last --listen "127.0.90.7:$P" --rcpt '*=451 4.2.1 mailbox busy, try later' ||
		integ_missing "sink last"
	start_sink lastg --listen "127.0.90.8:$P" --greeting '451 4.3.2 not now' || integ_missing "sink lastg"
	start_sink good --listen "127.0.92.1:$P" || integ_missing "sink good"
	start_sink g421 --listen "127.0.92.7:$P" --greeting "421 4.3.2 busy" || integ_missing "sink g421"
	start_sink g554 --listen "127.0.92.8:$P" --greeting "554 5.3.2 no service" || integ_missing "sink g554"
	i=20
	for s in "${STALLS[@]}"; do
		start_sink "stall-$s" --listen "127.0.92.$i:$P" --stall "$s" || integ_missing "sink stall-$s"
		i=$((i + 1))
	done
	start_sink many3 --listen "127.0.90.10:$P" || integ_missing "sink many3"
fi

# --- config: one recipient per transaction where two messages share a connection --------
CONF=$INTEG_DIR/hostile.ini
integ_config "$CONF" "$(
	integ_timeouts 5s
	echo
	cat <<'EOF'
[domain xb.test]
max_rcpt = 1

[domain xd.test]
max_rcpt = 1

[domain xn.test]
max_rcpt = 1

[domain xr.test]
max_rcpt = 1
EOF
)"

# every stage's timeout 1 s (6. stalls)
CONF1S=$INTEG_DIR/send-1s.ini
integ_config "$CONF1S" $'[timeouts]\nconnect = 1s\nbanner = 1s\nhelo = 1s\nstarttls = 1s\nmail = 1s\nrcpt = 1s\ndata = 1s\nblock = 1s\ndot = 1s\nrset = 1s\nquit = 1s'

# send, mx (lib.sh): `mxsend send -c CONF` within 15 s
SEND_LIMIT=15
SEND_ARGS=(-c "$CONF")
REPLY='reply="[^"]*"'
D250='delivered 250 2\.[0-9]{1,3}\.[0-9]{1,3}'
DEF='deferred 4[0-9]{2} 4\.[0-9]{1,3}\.[0-9]{1,3}'
BNC='bounced 5[0-9]{2} 5\.[0-9]{1,3}\.[0-9]{1,3}'
PLAIN='tls=none cipher=- verified=no'
TLS13Y='tls=TLSv1\.3 cipher=[A-Za-z0-9_-]+ verified=yes'

# --- 1. replies in step ------------------------------------------------------------------
# Two messages (one recipient each) on one connection. The sink answers the
# first 250, then sends an extra 250 while mxsend's check (RSET) is on the
# wire: mxsend reads it as the RSET's reply and starts the second message;
# every later reply is one behind (MAIL gets the RSET's 250, RCPT the MAIL's,
# BDAT the RCPT's "250 2.1.5", caught by its code; without an enhanced code
# (xr) the real 550 comes as the answer to the QUIT, caught there; over DATA,
# DATA gets a 250). The second recipient must be deferred, never delivered;
# the connection is dropped.
t_extra_reply() { # SINK DOMAIN REFUSED (messages the sink refused: 0 when mxsend stops at DATA)
	local m=$CASE_DIR/m.eml
	msg "$m" hostile
	send --from "$FROM" --to "a@$2" --to "b@$2" "$m"
	expect_rc 75
	expect_line "a@$2" "$D250 .*"
	expect_line "b@$2" "deferred 451 4\.5\.0 .*reply=\"replies out of step: .*\""
	assert_no_match "second recipient not delivered" "^b@$2 delivered" "$(cat "$CASE_DIR/out")"
	assert_eq "messages the sink accepted" 1 "$(sink_stat "$1" messages)"
	assert_eq "messages the sink refused" "$3" "$(sink_stat "$1" rejected)"
	assert_eq "one connection (the second message went on the first one's)" 1 \
		"$(sink_stat "$1" connections)"
}
run_case "1a. extra 250 after the end of data, next message over BDAT refused 550: deferred, never delivered" \
	t_extra_reply xb xb.test 1
run_case "1b. extra 250 after the end of data, next message over DATA refused 550: deferred, never delivered" \
	t_extra_reply xd xd.test 0
run_case "1f. the same over BDAT, RCPT replies without enhanced code: the 550 lands on the QUIT, deferred" \
	t_extra_reply xr xr.test 1
run_case "1e. the same without PIPELINING (one command at a time): deferred, never delivered" \
	t_extra_reply xn xn.test 0

# The extra 250 in the same write as the message's final reply: mxsend reads it
# as the QUIT's reply and finds the real 221 behind it, in the same read.
# Nothing is known for sure then: deferred (a retry may deliver it twice,
# never lose it).
t_extra_same_read() {
	local m=$CASE_DIR/m.eml
	msg "$m" hostile
	send --from "$FROM" --to u@xz.test "$m"
	expect_rc 75
	expect_line u@xz.test "deferred 451 4\.5\.0 .*reply=\"replies out of step: bytes after the last reply of the transaction\""
}
run_case "1c. extra 250 in the same read as the last expected reply: caught, deferred" t_extra_same_read

# `mxsend run` with a connection parked in the pool: the first job's check
# (RSET) gets the extra 250; the real RSET reply arrives while the connection
# idles: it is closed, and the next job goes over a new one.
t_extra_idle_pool() {
	local conf=$CASE_DIR/run.ini m=$CASE_DIR/m.eml i n
	start_redis -n idle || return 1
	integ_config "$conf" "$(printf '[redis]\nurl = %s\n\n[pool]\nidle_timeout = 30s\n' "$REDIS_URL")"
	sed -i '/^\[mxsend\]/a log = info' "$conf"
	msg "$m" hostile
	integ_spawn mxrun "$CASE_DIR/run.log" "$MXSEND" run -c "$conf"
	timed_run 10 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" enqueue -c "$conf" --from "$FROM" --to a@xi.test "$m"
	expect_rc 0
	for ((i = 0; i < 50; i++)); do
		n=$(redis-cli -p "$REDIS_PORT" XLEN mxsend:results 2>/dev/null)
		[ "${n:-0}" -ge 1 ] && break
		sleep 0.1
	done
	sleep 0.5 # the late RSET reply reaches the idle connection
	timed_run 10 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" enqueue -c "$conf" --from "$FROM" --to b@xi.test "$m"
	expect_rc 0
	for ((i = 0; i < 50; i++)); do
		n=$(redis-cli -p "$REDIS_PORT" XLEN mxsend:results 2>/dev/null)
		[ "${n:-0}" -ge 2 ] && break
		sleep 0.1
	done
	stop_proc mxrun TERM
	local res
	res=$(redis-cli -p "$REDIS_PORT" --raw EVAL "local o = {} for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do
		local f, r = e[2], {} for i = 1, #f, 2 do r[f[i]] = f[i + 1] end
		o[#o + 1] = r.rcpt .. ' ' .. r.status .. ' reused=' .. r.reused end return o" 1 mxsend:results)
	assert_match "first job delivered on a new connection" "^a@xi\.test delivered reused=no\$" "$(grep '^a@' <<<"$res")"
	assert_match "second job delivered, not over the idle connection" "^b@xi\.test delivered reused=no\$" "$(grep '^b@' <<<"$res")"
	assert_eq "connections at the sink" 2 "$(sink_stat xi connections)"
	assert_match "the idle connection was dropped for the reply nobody asked for" \
		"evt=smtp_fail .*state=READY .*unexpected reply" "$(cat "$CASE_DIR/run.log")"
}
run_case "1d. a reply while the connection idles in the pool: closed, the next job on a new connection" t_extra_idle_pool

# --- 2. the result names the host and address tried last --------------------------------
t_last_tried() { # DOMAIN MXHOST IP CODE
	local m=$CASE_DIR/m.eml
	msg "$m" hostile
	send --from "$FROM" --to "u@$1" "$m"
	expect_rc 75
	expect_line "u@$1" "deferred $4 [0-9.]+ $(mx "$2" "$3") $PLAIN policy=may $REPLY|deferred $4 [0-9.]+ $(mx "$2" "$3") tls=TLSv1\.[23] .*"
}
run_case "2a. MX 10 refuses the connection, MX 20 answers RCPT 451: result mx=MX 20 [its address]" \
	t_last_tried last.test mx2.last.test 127.0.90.7 451
run_case "2b. MX 10 refuses the connection, MX 20 greets 451: result mx=MX 20 [its address]" \
	t_last_tried lastg.test mx2.lastg.test 127.0.90.8 451

# Ten tries (8 addresses of MX 10, 2 of MX 20) end the attempt before MX 30:
# the result names MX 20 and one of its addresses, not MX 30 with MX 20's.
t_last_of_ten() {
	local m=$CASE_DIR/m.eml
	msg "$m" hostile
	send --from "$FROM" --to u@many.test "$m"
	expect_rc 75
	expect_line u@many.test "deferred 451 4\.4\.1 mx=mxb\.many\.test\[127\.0\.91\.1[12]\]:$P $PLAIN policy=may reply=\"[^\"]*(refused|backed off)[^\"]*\""
	assert_eq "MX 30 never reached" 0 "$(sink_stat many3 connections)"
}
run_case "2c. ten addresses refuse, MX 30 left untried: result names the last tried (MX 20 and its address)" \
	t_last_of_ten

# --- 3. CHUNKING offered, BDAT refused ---------------------------------------------------
t_bdat_refused() {
	local m=$CASE_DIR/m.eml got exp=$CASE_DIR/exp.eml
	msg "$m" hostile
	send --from "$FROM" --to u1@br.test --to u2@br.test "$m"
	expect_rc 0
	expect_line u1@br.test "$D250 $(mx mx1.br.test 127.0.90.3) .*"
	expect_line u2@br.test "$D250 $(mx mx1.br.test 127.0.90.3) .*"
	got=$(sink_find_msg br u1@br.test) || fail "sink br has no message" || return 1
	wire_expect "$m" "$exp"
	assert_file_eq "message at the sink (sent with DATA)" "$exp" "$got"
	assert_eq "messages the sink accepted" 1 "$(sink_stat br messages)"
	assert_eq "connections: the BDAT one, then the DATA one" 2 "$(sink_stat br connections)"
}
run_case "3. CHUNKING offered, BDAT answered 502: delivered with DATA on a new connection" t_bdat_refused

# --- 4. tls = may: a failed handshake goes on in plaintext -----------------------------
t_may_plain() { # SINK DOMAIN
	local m=$CASE_DIR/m.eml
	msg "$m" hostile
	send --tls may --from "$FROM" --to "u@$2" "$m"
	expect_rc 0
	expect_line "u@$2" "$D250 $(mx "mx1.$2" "$(grep -F "mx1.$2. A" "$ZONE" | cut -d' ' -f3)") $PLAIN policy=may $REPLY"
	assert_eq "messages at the sink" 1 "$(sink_stat "$1" messages)"
	assert_eq "connections: the TLS attempt, then plaintext" 2 "$(sink_stat "$1" connections)"
	assert_eq "handshakes completed at the sink" 0 "$(sink_stat "$1" handshakes)"
}
run_case "4a. tls=may, the server answers the ClientHello with a handshake_failure alert: delivered in plaintext" \
	t_may_plain tal tal.test
run_case "4b. tls=may, a TLS 1.0-only server: delivered in plaintext" t_may_plain t10 t10.test
run_case "4c. tls=may, the server cuts the connection mid-handshake: delivered in plaintext" \
	t_may_plain tcut tcut.test

# --- 5. greetings that refuse (from t_send.sh) --------------------------------------------
t_greet421() {
	local m=$CASE_DIR/m.eml
	msg "$m"
	send --from "$FROM" --to u@g421.test "$m"
	expect_rc 75
	expect_line u@g421.test "$DEF $(mx mx7.test 127.0.92.7) $PLAIN policy=may $REPLY"
}
run_case "421 greeting: deferred, exit 75" t_greet421

t_greet554() {
	local m=$CASE_DIR/m.eml
	msg "$m"
	send --from "$FROM" --to u@g554.test "$m"
	expect_rc 69
	expect_line u@g554.test "$BNC $(mx mx8.test 127.0.92.8) $PLAIN policy=may $REPLY"
}
run_case "554 greeting on the last MX: bounced, exit 69" t_greet554

t_greet_fallback() { # DOMAIN
	local m=$CASE_DIR/m.eml
	msg "$m"
	send --from "$FROM" --to "u@$1" "$m"
	expect_rc 0
	expect_line "u@$1" "$D250 $(mx mx1.test 127.0.92.1) $TLS13Y policy=may $REPLY"
}
run_case "421 greeting on MX 10: delivered via MX 20" t_greet_fallback fb421.test
run_case "554 greeting on MX 10: delivered via MX 20" t_greet_fallback fb554.test

# --- 6. stalled stages time out within their bound (in parallel; from t_send.sh) ---------
t_stall() { # STAGE
	local m=$CASE_DIR/m.eml lvl=may
	msg "$m" "stall $1"
	# Where the stall is in TLS set-up, "may" could legitimately fall back to a
	# plaintext delivery; require TLS so the timeout is what decides.
	case $1 in starttls | tls) lvl=encrypt ;; esac
	SEND_ARGS=(-c "$CONF1S") # this case's subshell only
	send --tls "$lvl" --from "$FROM" --to "u@stall-$1.test" "$m"
	expect_rc 75
	expect_line "u@stall-$1.test" "$DEF $(mx "mxs-$1.test" "127.0.92.$2") tls=[^ ]+ cipher=[^ ]+ verified=(yes|no) policy=$lvl $REPLY"
	expect_class "u@stall-$1.test" timeout # bounce class (README): a deadline passed
	echo "elapsed: $RUN_MS ms"
	assert_ge "elapsed ms (the stage timeout is 1 s)" 900 "$RUN_MS"
	assert_lt "elapsed ms" 6000 "$RUN_MS"
}
i=20
for s in "${STALLS[@]}"; do
	run_case_bg "stall at $s: deferred within the 1 s stage timeout" t_stall "$s" "$i"
	i=$((i + 1))
done
wait_cases 60

integ_finish

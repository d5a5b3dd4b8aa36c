#!/usr/bin/env bash
# t_relay.sh: `relay = host:port` with SMTP AUTH, through `mxsend send` against
# mxsink --auth: STARTTLS then AUTH on a submission-style port, implicit TLS
# (RFC 8314) on port 465, a wrong password, the password kept out of the
# trace log, a relay that wants AUTH when none is configured, and a
# [domain *] relay that never looks up MX records. Whole file: ~10 s.
#
# Hosts (127.0.90.x):
#   smarthost.test 127.0.90.3   sink relay (STARTTLS, --auth) on $SINK_PORT,
#                               sink relay465 (--tls-on-connect, --auth) on 465
#   mxown.test     127.0.90.4   sink own: rel.test's own MX, must stay empty
#   plainrelay.test 127.0.90.5  sink plain: no certificate, offers AUTH in plaintext
# shellcheck disable=SC2317,SC2031 # case functions run indirectly, each in its run_case subshell
set -u
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

integ_setup smarthost.test mxown.test
integ_require mxsend mxsink unbound unbound-checkconf perl ss timeout base64

P=$SINK_PORT
FROM=sender@client.test
USER=relayuser
# Distinctive, so a grep for it (or its base64 forms) finds only a real leak.
PASS=Pw-$RANDOM$RANDOM-s3cret
WRONG=Not-$RANDOM-the-password

ZONE=$INTEG_DIR/zone.txt
cat >"$ZONE" <<'EOF'
smarthost.test. A 127.0.90.3
mxown.test. A 127.0.90.4
plainrelay.test. A 127.0.90.5
rel.test. MX 10 mxown.test.
rel465.test. MX 10 mxown.test.
relbad.test. MX 10 mxown.test.
relnoauth.test. MX 10 mxown.test.
EOF
start_unbound -a 127.0.90.53 "$ZONE" || integ_missing "unbound did not start"
start_sink relay --listen "127.0.90.3:$P" --auth "$USER:$PASS" || integ_missing "sink relay"
# Port 465 is fixed (it is what selects implicit TLS); the sink's log, shown
# on stderr when it fails, says whether the port is taken or not permitted.
start_sink relay465 --listen "127.0.90.3:465" --tls-on-connect --auth "$USER:$PASS" ||
	integ_missing "sink relay465 on 127.0.90.3:465 (port taken, or binding below 1024 not permitted)"
start_sink own --listen "127.0.90.4:$P" || integ_missing "sink own"

# start_certless_sink NAME ARG...: mxsink without a certificate (start_sink always
# adds one), so it offers AUTH in plaintext; same layout, so sink_stat works.
start_certless_sink() {
	local name=$1 dir=$INTEG_DIR/sink.$1 sport i fd
	shift
	mkdir -p "$dir/maildir"
	sport=$(integ_port) || return 1
	echo "$sport" >"$dir/stats_port"
	integ_spawn "sink.$name" "$dir/log" "$MXSINK" "$@" --threads 1 --maildir "$dir/maildir" \
		--pidfile "$dir/pid" --stats "127.0.0.1:$sport"
	for ((i = 0; i < 50; i++)); do
		kill -0 "$SPAWN_PID" 2>/dev/null || break
		if [ -s "$dir/pid" ] && { exec {fd}<>"/dev/tcp/127.0.0.1/$sport"; } 2>/dev/null; then
			exec {fd}<&-
			return 0
		fi
		sleep 0.1
	done
	tail -n 5 "$dir/log" >&2
	return 1
}
start_certless_sink plain --listen "127.0.90.5:$P" --auth "$USER:$PASS" || integ_missing "sink plain"

# One config for the named-domain cases; timeouts short, every wait bounded.
CONF=$INTEG_DIR/relay.ini
integ_config "$CONF" "$(
	printf '[timeouts]\nconnect = 2s\nbanner = 3s\nhelo = 3s\nstarttls = 3s\nmail = 3s\n'
	printf 'rcpt = 3s\ndata = 3s\nblock = 3s\ndot = 3s\nrset = 3s\nquit = 3s\n\n'
	printf '[domain rel.test]\nrelay = smarthost.test:%s\nauth_user = %s\nauth_password = %s\n\n' "$P" "$USER" "$PASS"
	printf '[domain rel465.test]\nrelay = smarthost.test:465\nauth_user = %s\nauth_password = %s\n\n' "$USER" "$PASS"
	printf '[domain relbad.test]\nrelay = smarthost.test:%s\nauth_user = %s\nauth_password = %s\n\n' "$P" "$USER" "$WRONG"
	printf '[domain relnoauth.test]\nrelay = smarthost.test:%s\n\n' "$P"
	printf '[domain relplain.test]\nrelay = plainrelay.test:%s\nauth_user = %s\nauth_password = %s\n' "$P" "$USER" "$PASS"
)"

# send ARG...: `mxsend send -c CONF ARG...` (10 s bound), stdout and stderr in
# the case directory; sets RUN_RC and RUN_MS.
send() {
	timed_run 10 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" send "$@"
}

# show_run (lib.sh): 10 lines of stdout, the password masked in stderr
SHOW_RUN_OUT=10
SHOW_RUN_MASK=$PASS

# result RCPT: the one result line for RCPT (fails the case when not exactly one).
result() {
	local lines n
	lines=$(grep -E -- "^$(re_escape "$1") " "$CASE_DIR/out")
	n=$(grep -c . <<<"$lines")
	if [ "$n" != 1 ]; then
		fail "expected one result line for $1, got $n"
		show_run
		return 1
	fi
	echo "$lines"
}

msg() {
	printf 'From: %s\nSubject: %s\nMessage-ID: <%s@client.test>\n\nHello via the relay.\n' \
		"$FROM" "$2" "$RANDOM$RANDOM" >"$1"
}

# env_of SINK RCPT: the .env text of the message SINK stored for RCPT.
env_of() {
	local eml
	eml=$(sink_find_msg "$1" "$2") || return 1
	cat "${eml%.eml}.env"
}

# --- 1. STARTTLS relay with AUTH ------------------------------------------------
t_starttls_auth() {
	local m=$CASE_DIR/m.eml line env
	msg "$m" starttls
	send -c "$CONF" --from "$FROM" --to u1@rel.test "$m"
	assert_eq "exit status" 0 "$RUN_RC" || show_run
	line=$(result u1@rel.test) || return 1
	assert_match "result line" \
		"^u1@rel\.test delivered 250 2\.[0-9.]+ mx=smarthost\.test\[127\.0\.90\.3\]:$P tls=TLSv1\.3 .*verified=yes " "$line"
	env=$(env_of relay u1@rel.test) || fail "sink relay has no message for u1@rel.test" || return 1
	assert_match "sink saw AUTH as $USER" "^auth=$USER\$" "$env"
	assert_match "sink saw TLS" '^tls=TLSv1\.3$' "$env"
	assert_match "SNI is the relay host" '^sni=smarthost\.test$' "$env"
	assert_eq "connections to the domain's own MX" 0 "$(sink_stat own connections)"
	assert_eq "messages at the domain's own MX" 0 "$(sink_count own)"
}
run_case "relay host:port: STARTTLS, AUTH, delivered at the relay (auth=$USER), own MX untouched" t_starttls_auth

# --- 2. implicit TLS on port 465 --------------------------------------------------
t_implicit() {
	local m=$CASE_DIR/m.eml line env hs0
	msg "$m" implicit
	hs0=$(sink_stat relay465 handshakes)
	send -c "$CONF" --from "$FROM" --to u2@rel465.test "$m"
	assert_eq "exit status" 0 "$RUN_RC" || show_run
	line=$(result u2@rel465.test) || return 1
	assert_match "result line" \
		'^u2@rel465\.test delivered 250 2\.[0-9.]+ mx=smarthost\.test\[127\.0\.90\.3\]:465 tls=TLSv1\.3 ' "$line"
	env=$(env_of relay465 u2@rel465.test) || fail "sink relay465 has no message for u2@rel465.test" || return 1
	assert_match "sink saw AUTH as $USER" "^auth=$USER\$" "$env"
	assert_match "sink saw TLS 1.3" '^tls=TLSv1\.3$' "$env"
	assert_eq "handshakes at the 465 sink" "$((hs0 + 1))" "$(sink_stat relay465 handshakes)"
	assert_eq "messages at the domain's own MX" 0 "$(sink_count own)"
}
run_case "relay host:465: implicit TLS from the first byte, AUTH, delivered with TLSv1.3" t_implicit

# --- 3. wrong password --------------------------------------------------------------
t_wrong_password() {
	local m=$CASE_DIR/m.eml line af0
	msg "$m" wrong
	af0=$(sink_stat relay authfail)
	send -c "$CONF" --from "$FROM" --to u3@relbad.test "$m"
	line=$(result u3@relbad.test) || return 1
	# a refused AUTH is ours to fix: deferred 451 4.7.8, the 535 kept in the reply
	assert_eq "exit status (deferred)" 75 "$RUN_RC" || show_run
	assert_match "result line" '^u3@relbad\.test deferred 451 4\.7\.8 .*reply="AUTH refused: 535' "$line"
	assert_no_match "result line" ' delivered ' "$line"
	assert_ge "AUTH failures at the relay" "$((af0 + 1))" "$(sink_stat relay authfail)"
	if sink_find_msg relay u3@relbad.test 0 >/dev/null; then
		fail "the relay stored a message for u3@relbad.test"
	fi
	echo "$RUN_RC $line" >"$INTEG_DIR/wrong_password.result"
}
run_case "relay with a wrong password: 535 -> deferred 451 4.7.8, not delivered" t_wrong_password

# --- 4. the password never reaches the log ----------------------------------------
t_no_password_in_log() {
	local m=$CASE_DIR/m.eml plain login s
	msg "$m" trace
	send -c "$CONF" --log trace --from "$FROM" --to u4@rel.test "$m"
	assert_eq "exit status" 0 "$RUN_RC" || show_run
	assert_ge "trace lines on stderr" 5 "$(grep -c . "$CASE_DIR/err")"
	plain=$(printf '\0%s\0%s' "$USER" "$PASS" | base64 -w0)
	login=$(printf '%s' "$PASS" | base64 -w0)
	for s in "$PASS" "$plain" "$login"; do
		if grep -qF -- "$s" "$CASE_DIR/err" "$CASE_DIR/out"; then
			fail "the password (or its base64 form '$s') is in the output:"
			grep -nF -- "$s" "$CASE_DIR/err" "$CASE_DIR/out" | head -n 3 | sed "s/$PASS/<PASS>/g; s/^/#   | /"
		fi
	done
}
run_case "--log trace: the password (plain or base64) appears nowhere" t_no_password_in_log

# --- 5. relay requires AUTH, none configured ----------------------------------------
t_no_auth_user() {
	local m=$CASE_DIR/m.eml line rj0 af0
	msg "$m" noauth
	rj0=$(sink_stat relay rejected)
	af0=$(sink_stat relay authfail)
	send -c "$CONF" --from "$FROM" --to u5@relnoauth.test "$m"
	line=$(result u5@relnoauth.test) || return 1
	# missing credentials are a configuration error on our side: deferred
	assert_eq "exit status (deferred)" 75 "$RUN_RC" || show_run
	assert_match "result line" '^u5@relnoauth\.test deferred 451 4\.7\.0 .*530' "$line"
	assert_eq "MAILs refused (530) at the relay" "$((rj0 + 1))" "$(sink_stat relay rejected)"
	assert_eq "AUTH attempts without credentials" "$af0" "$(sink_stat relay authfail)"
	echo "$RUN_RC $line" >"$INTEG_DIR/no_auth.result"
}
run_case "relay wants AUTH, no auth_user configured: MAIL gets 530 -> deferred" t_no_auth_user

# --- 6. no TLS, no AUTH ------------------------------------------------------------------
t_no_plaintext_auth() {
	local m=$CASE_DIR/m.eml line
	msg "$m" plain
	send -c "$CONF" --from "$FROM" --to u7@relplain.test "$m"
	assert_eq "exit status (deferred)" 75 "$RUN_RC" || show_run
	line=$(result u7@relplain.test) || return 1
	assert_match "result line" '^u7@relplain\.test deferred [45][0-9][0-9] .*mx=plainrelay\.test\[127\.0\.90\.5\]' "$line"
	assert_eq "AUTH commands seen by the plaintext relay" 0 "$(sink_stat plain authfail)"
	assert_eq "messages at the plaintext relay" 0 "$(sink_count plain)"
	assert_eq "messages at the domain's own MX" 0 "$(sink_count own)"
}
run_case "relay without STARTTLS that offers AUTH in plaintext: no AUTH sent, deferred" t_no_plaintext_auth

# --- 7. [domain *] relay: no MX lookup at all -----------------------------------------
# drop.test never answers, so an MX lookup for it would hang until the DNS timeout.
t_star_relay() {
	local m=$CASE_DIR/m.eml conf=$CASE_DIR/star.ini line env
	msg "$m" star
	{
		printf '[mxsend]\ndns = %s\nca_file = %s\nhelo = client.test\n\n' "$DNS" "$CA"
		printf '[domain *]\nrelay = smarthost.test:%s\nauth_user = %s\nauth_password = %s\n' "$P" "$USER" "$PASS"
	} >"$conf"
	send -c "$conf" --from "$FROM" --to u6@drop.test "$m"
	assert_eq "exit status" 0 "$RUN_RC" || show_run
	line=$(result u6@drop.test) || return 1
	assert_match "result line" \
		"^u6@drop\.test delivered 250 2\.[0-9.]+ mx=smarthost\.test\[127\.0\.90\.3\]:$P tls=TLSv1\.3 " "$line"
	assert_lt "time (no MX lookup for drop.test)" 5000 "$RUN_MS"
	env=$(env_of relay u6@drop.test) || fail "sink relay has no message for u6@drop.test" || return 1
	assert_match "sink saw AUTH as $USER" "^auth=$USER\$" "$env"
}
run_case "[domain *] relay: a domain whose DNS never answers is delivered through the relay" t_star_relay

integ_finish

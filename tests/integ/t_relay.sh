#!/usr/bin/env bash
# t_relay.sh: `relay = host:port` with SMTP AUTH, through `mxsend send` against
# mxsink --auth: STARTTLS then AUTH on a submission-style port, implicit TLS
# (RFC 8314) on port 465, a wrong password, the password kept out of the
# trace log, a relay that wants AUTH when none is configured, and a
# [domain *] relay that never looks up MX records. Credentials go only to a
# relay whose certificate verified (tls = verify): a wrong-name or self-signed
# relay gets neither AUTH nor MAIL, `send --tls encrypt` cannot lower that,
# auth_insecure = yes is the operator's explicit opt-out (never plaintext), and
# the config errors (credentials below verify, auth_user without relay). The
# Redis password (URL or [redis] password) never shows in `mxsend run`'s
# output. Whole file: ~15 s.
#
# Hosts (127.0.90.x):
#   smarthost.test 127.0.90.3   sink relay (STARTTLS, --auth) on $SINK_PORT,
#                               sink relay465 (--tls-on-connect, --auth) on 465
#   mxown.test     127.0.90.4   sink own: rel.test's own MX, must stay empty
#   plainrelay.test 127.0.90.5  sink plain: no certificate, offers AUTH in plaintext
#   wrongrelay.test 127.0.90.6  sink wrongname: certificate for wrong.invalid (CA-signed)
#   selfrelay.test  127.0.90.7  sink selfsigned: right names, self-signed
# shellcheck disable=SC2317,SC2031 # case functions run indirectly, each in its run_case subshell
set -u
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

integ_setup smarthost.test mxown.test
integ_require mxsend mxsink unbound unbound-checkconf perl ss timeout base64 redis-server redis-cli

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
wrongrelay.test. A 127.0.90.6
selfrelay.test. A 127.0.90.7
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
start_sink wrongname --listen "127.0.90.6:$P" --auth "$USER:$PASS" \
	--cert "$CERTS/wrong.pem" --key "$CERTS/wrong.key" || integ_missing "sink wrongname"
start_sink selfsigned --listen "127.0.90.7:$P" --auth "$USER:$PASS" \
	--cert "$CERTS/selfsigned.pem" --key "$CERTS/selfsigned.key" || integ_missing "sink selfsigned"

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
	printf '[domain rel.test]\nrelay = smarthost.test:%s\ntls = verify\nauth_user = %s\nauth_password = %s\n\n' "$P" "$USER" "$PASS"
	printf '[domain rel465.test]\nrelay = smarthost.test:465\ntls = verify\nauth_user = %s\nauth_password = %s\n\n' "$USER" "$PASS"
	printf '[domain relbad.test]\nrelay = smarthost.test:%s\ntls = verify\nauth_user = %s\nauth_password = %s\n\n' "$P" "$USER" "$WRONG"
	printf '[domain relnoauth.test]\nrelay = smarthost.test:%s\n\n' "$P"
	printf '[domain relplain.test]\nrelay = plainrelay.test:%s\ntls = verify\nauth_user = %s\nauth_password = %s\n\n' "$P" "$USER" "$PASS"
	printf '[domain relplainok.test]\nrelay = plainrelay.test:%s\nauth_insecure = yes\nauth_user = %s\nauth_password = %s\n\n' "$P" "$USER" "$PASS"
	printf '[domain relwrong.test]\nrelay = wrongrelay.test:%s\ntls = verify\nauth_user = %s\nauth_password = %s\n\n' "$P" "$USER" "$PASS"
	printf '[domain relself.test]\nrelay = selfrelay.test:%s\ntls = verify\nauth_user = %s\nauth_password = %s\n\n' "$P" "$USER" "$PASS"
	printf '[domain relinsecure.test]\nrelay = wrongrelay.test:%s\ntls = encrypt\nauth_insecure = yes\nauth_user = %s\nauth_password = %s\n' "$P" "$USER" "$PASS"
)"

# send ARG... (lib.sh): `mxsend send ARG...` (10 s bound), stdout and stderr in
# the case directory; sets RUN_RC and RUN_MS.

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

# env_of SINK RCPT: the .env text of the message SINK stored for RCPT.
env_of() {
	local eml
	eml=$(sink_find_msg "$1" "$2") || return 1
	cat "${eml%.eml}.env"
}

# --- 1. STARTTLS relay with AUTH ------------------------------------------------
t_starttls_auth() {
	local m=$CASE_DIR/m.eml line env
	msg "$m" starttls "Hello via the relay."
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
	msg "$m" implicit "Hello via the relay."
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
	msg "$m" wrong "Hello via the relay."
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
	msg "$m" trace "Hello via the relay."
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
	msg "$m" noauth "Hello via the relay."
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
	msg "$m" plain "Hello via the relay."
	send -c "$CONF" --from "$FROM" --to u7@relplain.test "$m"
	assert_eq "exit status (deferred)" 75 "$RUN_RC" || show_run
	line=$(result u7@relplain.test) || return 1
	assert_match "result line" '^u7@relplain\.test deferred [45][0-9][0-9] .*mx=plainrelay\.test\[127\.0\.90\.5\]' "$line"
	assert_eq "AUTH commands seen by the plaintext relay" 0 "$(sink_stat plain authfail)"
	assert_eq "messages at the plaintext relay" 0 "$(sink_count plain)"
	assert_eq "messages at the domain's own MX" 0 "$(sink_count own)"
}
run_case "relay without STARTTLS that offers AUTH in plaintext: no AUTH sent, deferred" t_no_plaintext_auth

# --- 6b. auth_insecure = yes still never sends AUTH in plaintext --------------------------
t_insecure_no_plaintext() {
	local m=$CASE_DIR/m.eml line a0
	msg "$m" plainok "Hello via the relay."
	a0=$(sink_stat plain auths)
	send -c "$CONF" --from "$FROM" --to u8@relplainok.test "$m"
	assert_eq "exit status (deferred)" 75 "$RUN_RC" || show_run
	line=$(result u8@relplainok.test) || return 1
	assert_match "result line" '^u8@relplainok\.test deferred 451 4\.7\.0 .*never sent in plaintext' "$line"
	assert_eq "AUTH commands at the plaintext relay" "$a0" "$(sink_stat plain auths)"
	assert_eq "messages at the plaintext relay" 0 "$(sink_count plain)"
}
run_case "auth_insecure = yes, relay without STARTTLS (tls = may): still no AUTH in plaintext, deferred" \
	t_insecure_no_plaintext

# --- 7. [domain *] relay: no MX lookup at all -----------------------------------------
# drop.test never answers, so an MX lookup for it would hang until the DNS timeout.
t_star_relay() {
	local m=$CASE_DIR/m.eml conf=$CASE_DIR/star.ini line env
	msg "$m" star "Hello via the relay."
	{
		printf '[mxsend]\ndns = %s\nca_file = %s\nhelo = client.test\n\n' "$DNS" "$CA"
		printf '[domain *]\nrelay = smarthost.test:%s\ntls = verify\nauth_user = %s\nauth_password = %s\n' "$P" "$USER" "$PASS"
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

# --- 8. unverifiable relay certificates: nothing sent --------------------------------------
# sink_quiet SINK: the sink's AUTH and MAIL counters as "auths mails".
sink_quiet() {
	echo "$(sink_stat "$1" auths) $(sink_stat "$1" mails)"
}

# unverified SINK RCPT [SEND ARG...]: RCPT's relay is SINK, whose certificate does
# not verify: deferred 451 4.7.x, the sink was connected to but saw no AUTH, no MAIL.
unverified() {
	local sink=$1 rcpt=$2 m=$CASE_DIR/m.eml line hs0 q0
	shift 2
	msg "$m" unverified "Hello via the relay."
	hs0=$(sink_stat "$sink" connections)
	q0=$(sink_quiet "$sink")
	send -c "$CONF" "$@" --from "$FROM" --to "$rcpt" "$m"
	assert_eq "exit status (deferred)" 75 "$RUN_RC" || show_run
	line=$(result "$rcpt") || return 1
	assert_match "result line" "^$(re_escape "$rcpt") deferred 451 4\.7\.[05] " "$line"
	assert_ge "connections to $sink (it was tried)" "$((hs0 + 1))" "$(sink_stat "$sink" connections)"
	assert_eq "AUTH and MAIL commands at $sink (auths mails)" "$q0" "$(sink_quiet "$sink")"
	assert_eq "messages at $sink" 0 "$(sink_count "$sink")"
	assert_eq "messages at the domain's own MX" 0 "$(sink_count own)"
	LINE=$line
}

t_wrong_name() {
	unverified wrongname u9@relwrong.test || return 1
	assert_match "reason" 'verif' "$LINE"
}
run_case "tls = verify, relay certificate for another name: deferred, sink saw no AUTH and no MAIL" t_wrong_name

t_self_signed() {
	unverified selfsigned u10@relself.test || return 1
	assert_match "reason" 'verif' "$LINE"
}
run_case "tls = verify, self-signed relay certificate: deferred, sink saw no AUTH and no MAIL" t_self_signed

# The check right before AUTH, not only the config: --tls encrypt lowers the
# session's level (TLS without verification), and the wrong-name relay's
# handshake succeeds, yet AUTH is not sent.
t_override_cannot_lower() {
	unverified wrongname u11@relwrong.test --tls encrypt || return 1
	assert_match "reason" 'certificate of wrongrelay\.test was not verified' "$LINE"
}
run_case "send --tls encrypt to a verify+auth relay with a wrong-name certificate: AUTH still withheld" \
	t_override_cannot_lower

# The operator's explicit opt-out: auth_insecure = yes with tls = encrypt sends
# AUTH over TLS to the wrong-name relay (the documented risk).
t_insecure_opt_out() {
	local m=$CASE_DIR/m.eml line env
	msg "$m" insecure "Hello via the relay."
	send -c "$CONF" --from "$FROM" --to u12@relinsecure.test "$m"
	assert_eq "exit status" 0 "$RUN_RC" || show_run
	line=$(result u12@relinsecure.test) || return 1
	assert_match "result line" '^u12@relinsecure\.test delivered 250 .* verified=no ' "$line"
	env=$(env_of wrongname u12@relinsecure.test) || fail "sink wrongname has no message" || return 1
	assert_match "sink saw AUTH as $USER" "^auth=$USER\$" "$env"
}
run_case "auth_insecure = yes, tls = encrypt: AUTH over unverified TLS, as the operator asked" t_insecure_opt_out

# --- 9. configuration errors ----------------------------------------------------------------
# conf_err TEXT WANT: `mxsend send` with a config of TEXT exits 78 naming FILE:LINE: WANT.
conf_err() {
	local conf=$CASE_DIR/bad.ini m=$CASE_DIR/m.eml
	printf '%s' "$1" >"$conf"
	msg "$m" conferr "Hello via the relay."
	send -c "$conf" --from "$FROM" --to u@rel.test "$m"
	assert_eq "exit status" 78 "$RUN_RC" || show_run
	assert_match "error names file:line" "^mxsend: $(re_escape "$conf:$2")" "$(head -n 1 "$CASE_DIR/err")"
	if grep -qF -- "$PASS" "$CASE_DIR/err" "$CASE_DIR/out"; then
		fail "the password is in the output"
	fi
	assert_eq "connections to the relay" "$CONNS0" "$(sink_stat relay connections)"
}

t_conf_may_with_auth() {
	CONNS0=$(sink_stat relay connections)
	conf_err "$(printf '[mxsend]\nca_file = %s\n[domain rel.test]\nrelay = smarthost.test:%s\ntls = may\nauth_user = %s\nauth_password = %s\n' \
		"$CA" "$P" "$USER" "$PASS")" "6: auth_user in [domain rel.test] with tls = may: credentials go only to a relay whose certificate verifies"
	conf_err "$(printf '[domain *]\nrelay = smarthost.test:%s\nauth_user = %s\nauth_password = %s\n' \
		"$P" "$USER" "$PASS")" "3: auth_user in [domain *] with tls = may"
}
run_case "config: auth_user with tls = may (explicit or default) -> exit 78 naming file:line" t_conf_may_with_auth

t_conf_auth_without_relay() {
	CONNS0=$(sink_stat relay connections)
	conf_err "$(printf '[domain rel.test]\ntls = verify\nauth_user = %s\nauth_password = %s\n' "$USER" "$PASS")" \
		"3: auth_user in [domain rel.test] without relay"
}
run_case "config: auth_user without relay -> exit 78 naming file:line" t_conf_auth_without_relay

# --- 10. the Redis password never shows ------------------------------------------------------
# One redis with requirepass; `mxsend run` given a wrong password (in the URL,
# then in [redis] password) exits 78 at start-up; with the right password and
# log = trace its output names the URL redacted. The secrets appear nowhere.
RPASS=Rp-$RANDOM$RANDOM-right
RWRONG=Rw-$RANDOM$RANDOM-wrong
t_redis_password() {
	local conf=$CASE_DIR/run.ini s
	start_redis -n auth || { fail "redis did not start"; return 1; }
	timeout 5 redis-cli -p "$REDIS_PORT" CONFIG SET requirepass "$RPASS" >/dev/null ||
		{ fail "CONFIG SET requirepass"; return 1; }
	SHOW_RUN_MASK=$RWRONG
	printf '[mxsend]\nlog = trace\n[redis]\nurl = redis://:%s@127.0.0.1:%s/0\n' "$RWRONG" "$REDIS_PORT" >"$conf"
	timed_run 15 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" run -c "$conf" --until-empty
	assert_eq "exit status, wrong password in the URL" 78 "$RUN_RC" || show_run
	assert_match "error names the refusal" 'AUTH' "$(cat "$CASE_DIR/err")"
	cp "$CASE_DIR/err" "$CASE_DIR/err.url"
	printf '[mxsend]\nlog = trace\n[redis]\nurl = redis://user:%s@127.0.0.1:%s/0\n' "$RWRONG" "$REDIS_PORT" >"$conf"
	timed_run 15 "$CASE_DIR/out.user" "$CASE_DIR/err.user" "$MXSEND" run -c "$conf" --until-empty
	assert_eq "exit status, user:password in the URL" 78 "$RUN_RC"
	printf '[mxsend]\nlog = trace\n[redis]\nurl = redis://127.0.0.1:%s/0\npassword = %s\n' "$REDIS_PORT" "$RWRONG" >"$conf"
	timed_run 15 "$CASE_DIR/out.pw" "$CASE_DIR/err.pw" "$MXSEND" run -c "$conf" --until-empty
	assert_eq "exit status, wrong [redis] password" 78 "$RUN_RC"
	# a bad URL holding a password: the config error shows it redacted
	printf '[redis]\nurl = redis:/:%s@127.0.0.1\n' "$RWRONG" >"$conf"
	timed_run 15 "$CASE_DIR/out.bad" "$CASE_DIR/err.bad" "$MXSEND" run -c "$conf"
	assert_eq "exit status, bad URL" 78 "$RUN_RC"
	assert_match "bad URL shown redacted" 'redis:\*\*\*@127\.0\.0\.1' "$(cat "$CASE_DIR/err.bad")"
	# the right password: the start-up line shows the URL redacted
	printf '[mxsend]\nlog = trace\n[redis]\nurl = redis://:%s@127.0.0.1:%s/0\n' "$RPASS" "$REDIS_PORT" >"$conf"
	timed_run 20 "$CASE_DIR/out.ok" "$CASE_DIR/err.ok" "$MXSEND" run -c "$conf" --until-empty
	assert_eq "exit status, right password, empty queue" 0 "$RUN_RC"
	assert_match "start-up line with the URL redacted" \
		"evt=run_start .*redis=redis://:\*\*\*@127\.0\.0\.1:$REDIS_PORT/0" "$(cat "$CASE_DIR/err.ok")"
	for s in "$RWRONG" "$RPASS"; do
		if grep -qF -- "$s" "$CASE_DIR"/out* "$CASE_DIR"/err*; then
			fail "a Redis password is in mxsend's output:"
			grep -lF -- "$s" "$CASE_DIR"/out* "$CASE_DIR"/err* | sed 's/^/#   /'
		fi
	done
	SHOW_RUN_MASK=$PASS
}
run_case "mxsend run: wrong Redis password (URL, user:PW URL, [redis] password) -> exit 78; no password in the output" \
	t_redis_password

integ_finish

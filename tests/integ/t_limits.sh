#!/usr/bin/env bash
# t_limits.sh: limits and shaping through `mxsend send` against the sink:
# max_rcpt splits a message into transactions on one connection, and
# max_connections makes domains that share an MX host wait for (and reuse)
# the one connection allowed.
# shellcheck disable=SC2317 # case functions run indirectly, each in its run_case subshell
set -u
. "$(dirname "$0")/lib.sh"

integ_setup mxl1.test mxl2.test mxl3.test
integ_require mxsend mxsink unbound

P=$SINK_PORT
ZONE=$INTEG_DIR/zone.txt
cat >"$ZONE" <<'EOF2'
mxl1.test. A 127.0.71.1
mxl2.test. A 127.0.71.2
mxl3.test. A 127.0.71.3
rc.test. MX 10 mxl1.test.
a.test. MX 10 mxl2.test.
b.test. MX 10 mxl2.test.
c.test. MX 10 mxl2.test.
t12.test. MX 10 mxl3.test.
EOF2
# 120 domains, each with its own MX address (127.0.72.1-120): 120 sessions at once
for i in $(seq 1 120); do
	printf 'nf%d.test. MX 10 mxnf%d.test.\nmxnf%d.test. A 127.0.72.%d\n' "$i" "$i" "$i" "$i"
done >>"$ZONE"
start_unbound -a 127.0.71.53 "$ZONE" || integ_missing "unbound did not start"
start_sink nofile --listen "127.0.72.1-120:$P" --delay-ms 300 || integ_missing "sink nofile"
start_sink rcpt --listen "127.0.71.1:$P" || integ_missing "sink rcpt"
start_sink conn --listen "127.0.71.2:$P" || integ_missing "sink conn"
start_sink tls12 --listen "127.0.71.3:$P" --tls-max 1.2 || integ_missing "sink tls12"

t_max_rcpt() {
	local m=$CASE_DIR/m.eml conf=$CASE_DIR/c.ini
	msg "$m" limits
	integ_config "$conf" "$(printf '[domain rc.test]\nmax_rcpt = 2\n')"
	timed_run 20 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" send -c "$conf" --from s@client.test \
		--to u1@rc.test --to u2@rc.test --to u3@rc.test --to u4@rc.test --to u5@rc.test "$m"
	assert_eq "exit status" 0 "$RUN_RC"
	assert_eq "delivered lines" 5 "$(grep -c ' delivered 250 ' "$CASE_DIR/out")"
	assert_eq "messages at the sink (2+2+1 recipients)" 3 "$(sink_stat rcpt messages)"
	assert_eq "connections (transactions share one)" 1 "$(sink_stat rcpt connections)"
}
run_case "max_rcpt = 2: five recipients in three transactions on one connection" t_max_rcpt

t_max_conn() {
	local m=$CASE_DIR/m.eml conf=$CASE_DIR/c.ini
	msg "$m" limits
	integ_config "$conf" "max_connections = 1" # lands in integ_config's [domain *]
	timed_run 20 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" send -c "$conf" --from s@client.test \
		--to u@a.test --to u@b.test --to u@c.test "$m"
	assert_eq "exit status" 0 "$RUN_RC"
	assert_eq "delivered lines" 3 "$(grep -c ' delivered 250 ' "$CASE_DIR/out")"
	assert_eq "messages at the sink" 3 "$(sink_stat conn messages)"
	assert_eq "connections to the shared MX host" 1 "$(sink_stat conn connections)"
}
run_case "max_connections = 1: three domains on one MX wait and reuse one connection" t_max_conn

t_min_tls() {
	local m=$CASE_DIR/m.eml conf=$CASE_DIR/c.ini
	msg "$m" limits
	integ_config "$conf" "$(printf '[domain t12.test]\ntls = encrypt\nmin_tls = 1.3\n')"
	timed_run 20 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" send -c "$conf" --from s@client.test \
		--to u@t12.test "$m"
	assert_eq "exit status (deferred)" 75 "$RUN_RC"
	assert_match "result names the version" 'deferred 451 4\.7\.5 .*tls=TLSv1\.2 .*min_tls 1\.3' "$(cat "$CASE_DIR/out")"
	assert_eq "messages at the sink" 0 "$(sink_stat tls12 messages)"
	integ_config "$conf" "$(printf '[domain t12.test]\ntls = encrypt\n')"
	timed_run 20 "$CASE_DIR/out2" "$CASE_DIR/err2" "$MXSEND" send -c "$conf" --from s@client.test \
		--to u@t12.test "$m"
	assert_eq "without min_tls: delivered over TLS 1.2" 0 "$RUN_RC"
}
run_case "min_tls = 1.3 with tls = encrypt: a TLS 1.2-only MX is a TLS failure (deferred)" t_min_tls

# Open files: each session is a socket. A soft limit of 1024 (systemd's default;
# 64 here, for 120 sessions at once) must not turn sessions into "Too many open
# files" deferrals: mxsend raises the soft limit to the hard one at start, and
# says so when even the hard limit is low.
t_nofile() {
	local m=$CASE_DIR/m.eml conf=$CASE_DIR/c.ini to=() i
	msg "$m" limits
	integ_config "$conf" ""
	for i in $(seq 1 120); do to+=(--to "u@nf$i.test"); done
	# shellcheck disable=SC2016 # expanded by the inner shell
	timed_run 40 "$CASE_DIR/out" "$CASE_DIR/err" bash -c 'ulimit -Sn 64 && exec "$@"' _ \
		"$MXSEND" send -c "$conf" --from s@client.test "${to[@]}" "$m"
	assert_eq "exit status (soft limit 64, 120 sessions)" 0 "$RUN_RC"
	assert_eq "delivered lines" 120 "$(grep -c ' delivered 250 ' "$CASE_DIR/out")"
	assert_no_match "no EMFILE" 'Too many open files' "$(cat "$CASE_DIR/out" "$CASE_DIR/err")"
	assert_no_match "no low-limit warning (hard limit $(ulimit -Hn))" 'evt=nofile_low' "$(cat "$CASE_DIR/err")"
	# the hard limit itself low: delivered as far as it goes, and said
	timed_run 20 "$CASE_DIR/out2" "$CASE_DIR/err2" bash -c 'ulimit -n 2048 && exec "$@"' _ \
		"$MXSEND" send -c "$conf" --from s@client.test --to u@nf1.test "$m"
	assert_eq "hard limit 2048: exit status" 0 "$RUN_RC"
	assert_match "hard limit 2048: warned" 'evt=nofile_low limit=2048 ' "$(cat "$CASE_DIR/err2")"
}
run_case "open files: soft limit 64, 120 sessions at once: raised to the hard limit, all delivered; a low hard limit is warned about" t_nofile

integ_finish

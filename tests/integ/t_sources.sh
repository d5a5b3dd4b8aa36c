#!/usr/bin/env bash
# t_sources.sh: egress sources and pools (issue 19 part 2) on loopback. Sources
# bind 127.0.64.x (all of 127/8 is local); the sink (127.0.65.1) records each
# message's client address:port (peer=, one per connection) and EHLO name
# (helo=) in its .env. Checks: every message arrives from an address of its
# pool with that address's EHLO name, results name the source, connections
# never carry two pools' jobs, weights hold, an address the host does not have
# is a start-up error (exit 78, file:line), and without sources nothing binds.
# shellcheck disable=SC2317,SC2031 # case functions run indirectly, each in its run_case subshell
set -u
# shellcheck source=tests/integ/lib.sh
. "$(dirname "$0")/lib.sh"

integ_setup
integ_require mxsend mxsink unbound redis-server redis-cli

P=$SINK_PORT
CASE_RE=.
DNS_SPEC="
mxs.test. A 127.0.65.1
a.test. MX 10 mxs.test.
b.test. MX 10 mxs.test.
c.test. MX 10 mxs.test.
d.test. MX 10 mxs.test.
mxn.test. A 127.0.65.2
f.test. MX 10 mxn.test.
_smtp._tls.f.test. TXT \"v=TLSRPTv1; rua=mailto:rua@f.test\"
"
if [ -z "$INTEG_MISSING" ]; then
	start_unbound "$DNS_SPEC" || integ_missing "unbound"
	start_sink src --listen "127.0.65.1:$P" --threads 2 || integ_missing "sink src"
	start_sink nostarttls --listen "127.0.65.2:$P" --no-starttls || integ_missing "sink nostarttls"
fi

# Sources: s1/s2 in pool "news" (2:1), s3 alone in pool "tx"; [domain b.test]
# sends through tx unless the job names its pool.
SOURCES='[source s1]
address = 127.0.64.1
ehlo = out1.client.test

[source s2]
address = 127.0.64.2
ehlo = out2.client.test

[source s3]
address = 127.0.64.3
ehlo = out3.client.test

[pool news]
sources = s1:2 s2:1

[pool tx]
sources = s3

[domain b.test]
pool = tx'
NEWS_RULE=$'[domain .test]\npool = news'

# the EHLO name of a source address
helo_of() {
	case $1 in
	127.0.64.1) echo out1.client.test ;;
	127.0.64.2) echo out2.client.test ;;
	127.0.64.3) echo out3.client.test ;;
	*) echo "?" ;;
	esac
}

# env_lines: "JOB PEER_IP PEER_PORT HELO" per stored message (JOB from X-Job,
# "-" when none); only the jobs whose X-Job matches the ERE $CASE_RE.
env_lines() {
	local md f job peer helo
	md=$(sink_maildir src)
	for f in "$md"/*.env; do
		[ -f "$f" ] || continue
		job=$(tr -d '\r' <"${f%.env}.eml" | sed -n 's/^X-Job: //p' | head -n 1)
		peer=$(sed -n 's/^peer=//p' "$f")
		helo=$(sed -n 's/^helo=//p' "$f")
		[[ $job =~ $CASE_RE ]] && echo "$job ${peer%:*} ${peer##*:} $helo"
	done
}

# stored_ge N: the sink stored at least N messages of this case (a predicate
# for wait_until, which must re-run the count, not get it once)
stored_ge() { [ "$(env_lines | wc -l)" -ge "$1" ]; }

# tagged FILE TAG: a message with "X-Job: TAG"
tagged() {
	printf 'From: s@client.test\nTo: x@example.test\nX-Job: %s\nSubject: %s\n\nHello.\n' "$2" "$2" >"$1"
}

# check_helo: every stored message's EHLO name is its client address's.
check_helo() {
	local bad
	bad=$(env_lines | while read -r _ ip _ helo; do
		[ "$(helo_of "$ip")" = "$helo" ] || echo "$ip said $helo"
	done)
	assert_eq "EHLO name matches the source address of every message" "" "$bad"
}

t_src_send() {
	local conf=$CASE_DIR/c.ini m=$CASE_DIR/m.eml
	CASE_RE=^send-
	integ_config "$conf" "$SOURCES"$'\n\n'"$NEWS_RULE"
	tagged "$m" send-1
	send -c "$conf" --from s@client.test --to u@a.test --to u@c.test --to u@d.test --to u@b.test "$m"
	assert_eq "exit status" 0 "$RUN_RC" || show_run
	# news: s1, s1, s2 by weight (smooth round-robin) for a, c, d; b: its rule's pool tx
	local out
	out=$(cat "$CASE_DIR/out")
	assert_match "a.test from s1" '^u@a\.test delivered 250 .* source=s1\[127\.0\.64\.1\]$' "$out"
	assert_match "b.test from s3 (domain rule pool = tx)" '^u@b\.test delivered 250 .* source=s3\[127\.0\.64\.3\]$' "$out"
	assert_eq "news: two messages from s1 (weight 2)" 2 "$(grep -Ec ' source=s1\[127\.0\.64\.1\]$' <<<"$out")"
	assert_eq "news: one message from s2 (weight 1)" 1 "$(grep -Ec ' source=s2\[127\.0\.64\.2\]$' <<<"$out")"
	wait_until 5 stored_ge 4
	assert_eq "sink: 4 messages" 4 "$(env_lines | wc -l)"
	check_helo
	assert_eq "b.test arrived from 127.0.64.3" 1 "$(env_lines | grep -c ' 127\.0\.64\.3 ')"
	# no pool named by the job or its domain's rule: every source, in turn
	integ_config "$conf" "$SOURCES"
	tagged "$m" send-2
	send -c "$conf" --from s@client.test --to v@a.test --to v@c.test --to v@d.test "$m"
	assert_eq "every source: exit status" 0 "$RUN_RC" || show_run
	out=$(cat "$CASE_DIR/out")
	for i in 1 2 3; do
		assert_eq "every source: one message from s$i" 1 "$(grep -Ec " source=s$i\[127\.0\.64\.$i\]\$" <<<"$out")"
	done
	# --pool NAME: the job field's flag, over the domain rule's pool
	integ_config "$conf" "$SOURCES"$'\n\n'"$NEWS_RULE"
	tagged "$m" send-3
	send -c "$conf" --pool tx --from s@client.test --to w@a.test --to w@c.test "$m"
	assert_eq "--pool tx: exit status" 0 "$RUN_RC" || show_run
	assert_eq "--pool tx: both from s3 (not the rule's news)" 2 \
		"$(grep -Ec ' delivered 250 .* source=s3\[127\.0\.64\.3\]$' "$CASE_DIR/out")"
	send -c "$conf" --pool 'no"such' --from s@client.test --to w@a.test "$m"
	assert_eq "--pool unknown: exit 64" 64 "$RUN_RC"
	assert_match "--pool unknown: said, escaped" 'mxsend send: --pool "no\\"such": no \[pool' \
		"$(cat "$CASE_DIR/err")"
}
run_case "send: each message bound to a source of its pool (weights 2:1, domain rule pool; no pool: every source in turn; --pool NAME, unknown: 64), EHLO per source, result source=NAME[ADDR]" t_src_send

t_src_none() {
	local conf=$CASE_DIR/c.ini m=$CASE_DIR/m.eml
	integ_config "$conf" ""
	msg "$m" nosources
	send -c "$conf" --from s@client.test --to nosrc@a.test "$m"
	assert_eq "exit status" 0 "$RUN_RC" || show_run
	assert_match "no sources: source=-" '^nosrc@a\.test delivered 250 .* source=-$' "$(cat "$CASE_DIR/out")"
	local f
	f=$(sink_find_msg src nosrc@a.test 5) || fail "message not stored"
	assert_eq "EHLO is [mxsend] helo" client.test "$(sed -n 's/^helo=//p' "${f%.eml}.env")"
	assert_match "the kernel chose the address (not a source)" '^peer=127\.0\.0\.1:' "$(grep '^peer=' "${f%.eml}.env")"
}
run_case "no source configured: no bind (the kernel's address), EHLO [mxsend] helo, source=-" t_src_none

t_src_bad() {
	local conf=$CASE_DIR/c.ini m=$CASE_DIR/m.eml
	integ_config "$conf" $'[source far]\naddress = 192.0.2.1\nehlo = far.client.test'
	msg "$m"
	send -c "$conf" --from s@client.test --to u@a.test "$m"
	assert_eq "send: exit 78 (config)" 78 "$RUN_RC"
	assert_match "send: names file:line and the address" \
		"c\.ini:[0-9]+: \[source far\]: cannot bind address 192\.0\.2\.1" "$(cat "$CASE_DIR/err")"
	timed_run 10 "$CASE_DIR/out2" "$CASE_DIR/err2" "$MXSEND" run -c "$conf"
	assert_eq "run: exit 78 (config)" 78 "$RUN_RC"
	assert_match "run: names the address" "cannot bind address 192\.0\.2\.1" "$(cat "$CASE_DIR/err2")"
	# the others: an unknown source in a pool, an unknown pool in a rule, a bad address
	integ_config "$conf" $'[pool p]\nsources = nosuch'
	send -c "$conf" --from s@client.test --to u@a.test "$m"
	assert_eq "unknown source in a pool: 78" 78 "$RUN_RC"
	assert_match "says which" 'unknown source "nosuch"' "$(cat "$CASE_DIR/err")"
	integ_config "$conf" $'[domain x.test]\npool = nosuch'
	send -c "$conf" --from s@client.test --to u@a.test "$m"
	assert_eq "unknown pool in a rule: 78" 78 "$RUN_RC"
	assert_match "says which" 'unknown pool "nosuch"' "$(cat "$CASE_DIR/err")"
	integ_config "$conf" $'[source s]\naddress = 127.0.64.300'
	send -c "$conf" --from s@client.test --to u@a.test "$m"
	assert_eq "bad address: 78" 78 "$RUN_RC"
	assert_match "says which" 'bad value "127\.0\.64\.300" for address' "$(cat "$CASE_DIR/err")"
}
run_case "a source address the host does not have (192.0.2.1): exit 78 at start with file:line (send and run); unknown source/pool, bad address" t_src_bad

# xadd PORT JOB POOL DOMAIN: one job with X-Job JOB (POOL "" = no pool field)
xadd() {
	local data
	data=$(printf 'X-Job: %s\r\nSubject: %s\r\n\r\nbody\r\n' "$2" "$2")
	if [ -n "$3" ]; then
		rcli "$1" XADD mxsend:jobs '*' from s@client.test to "$2@$4" data "$data" id "$2" pool "$3" >/dev/null
	else
		rcli "$1" XADD mxsend:jobs '*' from s@client.test to "$2@$4" data "$data" id "$2" >/dev/null
	fi
}

t_src_pools() {
	start_redis -n pools || { fail "redis"; return; }
	local conf=$CASE_DIR/c.ini port=$REDIS_PORT i
	CASE_RE='^(news|tx|rule)-'
	# 2 connections per (source, MX host): jobs wait for one and reuse it
	integ_config "$conf" "$(printf '[redis]\nurl = %s\n\n[mx mxs.test]\nmax_connections = 2\n\n%s' \
		"$REDIS_URL" "$SOURCES")"
	# interleaved: news and tx jobs to the same domains (one MX host), b.test
	# without a pool field (its rule: tx), and one job naming no such pool
	for i in $(seq 1 30); do
		xadd "$port" "news-$i" news a.test
		xadd "$port" "tx-$i" tx a.test
		xadd "$port" "rule-$i" "" b.test
	done
	xadd "$port" "bad-1" nosuch a.test
	timed_run 60 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" run -c "$conf" --until-empty
	assert_eq "run exit status" 0 "$RUN_RC" || show_run
	assert_eq "delivered" 90 "$(results "$port" rcpt,status | grep -c '|delivered$')"
	assert_match "unknown pool: rejected, named" '^bad-1\|rejected\|unknown pool "nosuch"$' \
		"$(results "$port" id,status,reply)"
	# results: news from s1/s2, tx and rule from s3
	local r
	r=$(results "$port" id,source)
	assert_eq "news results from s1/s2" 30 "$(grep -Ec '^news-[0-9]+\|s[12]\[127\.0\.64\.[12]\]$' <<<"$r")"
	assert_eq "tx results from s3" 30 "$(grep -Ec '^tx-[0-9]+\|s3\[127\.0\.64\.3\]$' <<<"$r")"
	assert_eq "b.test (rule pool tx) results from s3" 30 "$(grep -Ec '^rule-[0-9]+\|s3\[127\.0\.64\.3\]$' <<<"$r")"
	assert_eq "rejected result: source -" 1 "$(grep -Ec '^bad-1\|-$' <<<"$r")"
	local lines
	wait_until 5 stored_ge 90
	lines=$(env_lines)
	assert_eq "sink: news jobs from 127.0.64.1/2 only" 30 "$(grep -Ec '^news-[0-9]+ 127\.0\.64\.[12] ' <<<"$lines")"
	assert_eq "sink: tx and rule jobs from 127.0.64.3 only" 60 "$(grep -Ec '^(tx|rule)-[0-9]+ 127\.0\.64\.3 ' <<<"$lines")"
	check_helo
	# one connection (client ip:port) carries one pool's jobs only
	local mixed
	mixed=$(awk '{ split($1, a, "-"); pool = (a[1] == "news") ? "news" : "tx"; c = $2 ":" $3
		if (c in seen && seen[c] != pool) print c; seen[c] = pool }' <<<"$lines" | sort -u)
	assert_eq "no connection carried two pools' jobs" "" "$mixed"
	# max_connections = 2 counts per (source, MX host): s1, s2, s3 two each
	local peak
	peak=$(sink_stat src peak)
	assert_lt "sink: at most 6 connections at once (2 per source)" 7 "$peak"
	assert_ge "sink: more than 2 at once (the cap is per source, not per MX host)" 3 "$peak"
	local conns
	conns=$(awk '{ print $2 ":" $3 }' <<<"$lines" | sort -u | wc -l)
	assert_lt "connections were reused ($conns for 90 messages)" 60 "$conns"
}
run_case "run: job field pool and [domain] pool = NAME, jobs interleaved: each from its pool's addresses with their EHLO names, connections never cross pools, result source; unknown pool rejected" t_src_pools

t_src_family() {
	local conf=$CASE_DIR/c.ini m=$CASE_DIR/m.eml
	integ_config "$conf" "$SOURCES"$'\n\n[source v6]\naddress = ::1\nehlo = v6.client.test\n\n[pool mix]\nsources = v6:5 s2:1\n\n[domain .test]\npool = mix'
	tagged "$m" fam-1
	send -c "$conf" --from s@client.test --to u@a.test --to u@c.test "$m"
	assert_eq "exit status" 0 "$RUN_RC" || show_run
	assert_eq "IPv4 MX: both from the IPv4 source (weight 5 IPv6 skipped)" 2 \
		"$(grep -Ec ' delivered 250 .* source=s2\[127\.0\.64\.2\]$' "$CASE_DIR/out")"
	integ_config "$conf" "$SOURCES"$'\n\n[source v6]\naddress = ::1\n\n[pool v6only]\nsources = v6\n\n[domain .test]\npool = v6only'
	send -c "$conf" --from s@client.test --to u@a.test "$m"
	expect_line u@a.test 'deferred 451 4\.4\.1 .*no egress source of the pool has an IPv4 address.*'
}
# TLS sessions are resumed per source: a session source s1 got is never
# offered from s2's address. One message per connection (reuse_max = 1), jobs
# one at a time (a.test: one worker), s1 and s2 in turn (weights 1:1).
has_result() { results "$1" id | grep -qx -- "$2"; } # PORT ID

t_src_resume() {
	start_redis -n resume || { fail "redis"; return; }
	local conf=$CASE_DIR/c.ini port=$REDIS_PORT i
	integ_config "$conf" "$(printf '[redis]\nurl = %s\n\n[pool]\nreuse_max = 1\n\n%s\n\n[pool even]\nsources = s1 s2' \
		"$REDIS_URL" "$SOURCES")"
	mx_start run "$conf" || { fail "mxsend run did not start"; return; }
	for i in 1 2 3 4 5 6; do
		xadd "$port" "res-$i" even a.test
		wait_until 10 has_result "$port" "res-$i" ||
			{ fail "job res-$i: no result"; break; }
	done
	assert_eq "exit status" 0 "$(mx_stop run)"
	local r
	r=$(results "$port" id,status,source,tls,resumed,reused)
	assert_eq "res-1: s1, full handshake" "res-1|delivered|s1[127.0.64.1]|TLSv1.3|no|no" "$(sed -n 1p <<<"$r")"
	assert_eq "res-2: s2, full handshake (s1's session is not offered)" \
		"res-2|delivered|s2[127.0.64.2]|TLSv1.3|no|no" "$(sed -n 2p <<<"$r")"
	for i in 3 4 5 6; do
		assert_match "res-$i: resumed, from its own source's session" "^res-$i\|delivered\|s[12]\[.*\]\|TLSv1\.3\|yes\|no\$" \
			"$(sed -n "${i}p" <<<"$r")"
	done
	assert_eq "s1 and s2 in turn" "s1 s2 s1 s2 s1 s2" "$(cut -d'|' -f3 <<<"$r" | cut -d'[' -f1 | tr '\n' ' ' | sed 's/ $//')"
}
run_case "TLS resumption per source: s2's first connection makes a full handshake though s1 holds a session; later ones resume their own source's" t_src_resume

run_case "a pool mixing IPv6 and IPv4 sources: an IPv4 MX gets an IPv4 source; none in the pool: deferred, said" t_src_family

# t_src_gone runs in a network namespace of its own (unshare -n, root only):
# there a source address can leave the host while `mxsend run` is running.
# Everything it needs is inside: lo, two addresses 10.99.0.1-2, redis, a sink,
# the relay by IP literal (no DNS).
GONE_SCRIPT='
set -u
d=$1 mxsend=$2 mxsink=$3
trap "kill \$(jobs -p) 2>/dev/null" EXIT
ip link set lo up && ip addr add 10.99.0.1/32 dev lo && ip addr add 10.99.0.2/32 dev lo || exit 3
redis-server --bind 127.0.0.1 --port 6391 --save "" --appendonly no --daemonize no >"$d/redis.log" 2>&1 &
"$mxsink" --listen 127.0.0.1:2525 --no-starttls --maildir "$d/md" >"$d/sink.log" 2>&1 &
for i in $(seq 50); do redis-cli -p 6391 ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
cat >"$d/c.ini" <<EOC
[mxsend]
workers = 1
helo = client.test
dns = 127.0.0.1:1
metrics = 127.0.0.1:9477
[redis]
url = redis://127.0.0.1:6391/0
[tls]
mta_sts = no
tlsrpt = no
[pool]
idle_timeout = 0
[source g1]
address = 10.99.0.1
ehlo = g1.client.test
[source g2]
address = 10.99.0.2
ehlo = g2.client.test
[domain *]
relay = 127.0.0.1:2525
tls = none
EOC
job() { redis-cli -p 6391 XADD mxsend:jobs "*" from s@client.test to "$1@gone.test" data "$(printf "X-Job: %s\r\n\r\nbody\r\n" "$1")" id "$1" >/dev/null; }
done_n() { redis-cli -p 6391 XLEN mxsend:results; }
"$mxsend" run -c "$d/c.ini" >"$d/run.log" 2>&1 &
mx=$!
job first
for i in $(seq 100); do [ "$(done_n)" -ge 1 ] && break; sleep 0.1; done
ip addr del 10.99.0.1/32 dev lo
for i in 1 2 3 4; do job "after$i"; done
for i in $(seq 100); do [ "$(done_n)" -ge 5 ] && break; sleep 0.1; done
exec 5<>/dev/tcp/127.0.0.1/9477 && printf "GET /metrics HTTP/1.0\r\n\r\n" >&5 && timeout 2 cat <&5 >"$d/metrics"
redis-cli -p 6391 --raw EVAL "local o = {} for _, e in ipairs(redis.call(\"XRANGE\", KEYS[1], \"-\", \"+\")) do
  local m = {} for i = 1, #e[2], 2 do m[e[2][i]] = e[2][i + 1] end
  o[#o + 1] = m.id .. \"|\" .. m.status .. \"|\" .. m.source end return o" 1 mxsend:results >"$d/results"
kill $mx; wait $mx
kill %1 %2 2>/dev/null
wait
exit 0
'

t_src_gone() {
	if [ "$(id -u)" != 0 ] || ! command -v unshare >/dev/null || ! command -v ip >/dev/null; then
		diag "skipped: needs root, unshare and ip (a network namespace of its own)"
		return 0
	fi
	local d=$CASE_DIR/ns
	mkdir -p "$d/md"
	timed_run 60 "$CASE_DIR/out" "$CASE_DIR/err" unshare -n bash -c "$GONE_SCRIPT" _ "$d" "$MXSEND" "$MXSINK"
	assert_eq "namespace script exit" 0 "$RUN_RC" || { show_run; return 1; }
	local r
	r=$(cat "$d/results")
	assert_match "first job from g1 (still there)" '^first\|delivered\|g1\[10\.99\.0\.1\]$' "$r"
	assert_eq "after g1 left: all 4 delivered from g2" 4 "$(grep -Ec '^after[1-4]\|delivered\|g2\[10\.99\.0\.2\]$' <<<"$r")"
	assert_match "said once" 'evt=source_down source=g1\[10\.99\.0\.1\]' "$(cat "$d/run.log")"
	assert_eq "said once only" 1 "$(grep -c 'evt=source_down' "$d/run.log")"
	assert_match "metric" '^mxsend_source_down_total 1' "$(tr -d '\r' <"$d/metrics")"
	assert_match "per-source metric" '^mxsend_source_deliveries_total\{source="g2",status="delivered"\} 4' \
		"$(tr -d '\r' <"$d/metrics")"
}
run_case "a source address that leaves the host while running (netns): out of its pool, said once (evt=source_down), counted; its mail goes through the other source" t_src_gone

t_src_tlsrpt() {
	start_redis -n rpt || { fail "redis"; return; }
	local conf=$CASE_DIR/c.ini m=$CASE_DIR/m.eml today n
	today=$(date -u +%F)
	integ_config "$conf" "$(printf '[redis]\nurl = %s\n\n%s\n\n[domain f.test]\npool = tx' "$REDIS_URL" "$SOURCES")"
	tagged "$m" rpt-1
	send -c "$conf" --from s@client.test --to u@f.test "$m"
	assert_eq "exit status" 0 "$RUN_RC" || show_run
	expect_line u@f.test 'delivered 250 .* source=s3\[127\.0\.64\.3\]'
	timed_run 30 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" tlsrpt -c "$conf" --dry-run --day "$today" f.test
	expect_rc 0 || return 1
	n=$(python3 - "$CASE_DIR/out" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
doc = json.loads(text[text.index("{"):text.rindex("}") + 1])
for p in doc["policies"]:
    for f in p.get("failure-details", []):
        print(f["result-type"], f.get("sending-mta-ip", "-"))
PY
	) || fail "the dry-run JSON does not parse"
	assert_eq "TLSRPT failure: sending-mta-ip is the source's address" "starttls-not-supported 127.0.64.3" "$n"
}
run_case "TLSRPT: a failed TLS session's sending-mta-ip is its egress source's address" t_src_tlsrpt

integ_finish

#!/usr/bin/env bash
# tests/integ/demo.sh (`make demo`): the whole path on loopback. Starts a
# private redis-server, unbound (1,000 test domains over 200 MX hosts) and the
# TLS SMTP sink listening on those 200 addresses; enqueues 100,000 messages;
# runs `mxsend run` until the queue is empty; prints a summary; stops
# everything it started. Knobs (environment): N (messages, default 100000),
# DOMAINS (1000), MXS (200), INFLIGHT (max_inflight, 2000), SINK_THREADS (1).
. "$(dirname "$0")/lib.sh"

N=${N:-100000}
DOMAINS=${DOMAINS:-1000}
MXS=${MXS:-200}
INFLIGHT=${INFLIGHT:-2000}
SINK_THREADS=${SINK_THREADS:-1}

say() { printf 'demo: %s\n' "$*" >&2; }

integ_setup
integ_require mxsend mxsink redis-server redis-cli unbound
if [ -n "$INTEG_MISSING" ]; then
	say "missing: $INTEG_MISSING (run make deps all)"
	exit 1
fi

# DNS: domain i -> MX mx<i % MXS>.test -> 127.0.10.<1 + i % MXS> (and a second,
# lower-priority MX for every tenth domain, so MX lists vary).
zone=$INTEG_DIR/demo.zone
awk -v d="$DOMAINS" -v m="$MXS" 'BEGIN {
	for (i = 0; i < m; i++)
		printf "mx%d.test. A 127.0.%d.%d\n", i, 10 + int(i / 250), 1 + i % 250
	for (i = 0; i < d; i++) {
		printf "dom%d.test. MX 10 mx%d.test.\n", i, i % m
		if (i % 10 == 0)
			printf "dom%d.test. MX 20 mx%d.test.\n", i, (i + 1) % m
	}
}' >"$zone"
say "starting unbound ($DOMAINS domains, $MXS MX hosts), the sink, redis-server"
start_unbound "$zone" || exit 1
last=$((MXS < 250 ? MXS : 250))
listen=(--listen "127.0.10.1-$last:$SINK_PORT")
[ "$MXS" -gt 250 ] && listen+=(--listen "127.0.11.1-$((MXS - 250)):$SINK_PORT")
# The sink without a maildir (start_sink always gives one): 100,000 files
# would measure the disk, not mxsend.
sink_dir=$INTEG_DIR/sink.demo
mkdir -p "$sink_dir"
sport=$(integ_port) || exit 1
echo "$sport" >"$sink_dir/stats_port"
integ_spawn sink.demo "$sink_dir/log" "$MXSINK" "${listen[@]}" --threads "$SINK_THREADS" --quiet \
	--cert "$CERTS/server.pem" --key "$CERTS/server.key" --pidfile "$sink_dir/pid" \
	--stats "127.0.0.1:$sport"
for ((i = 0; i < 50; i++)); do
	sink_stat demo >/dev/null 2>&1 && break
	kill -0 "$SPAWN_PID" 2>/dev/null || break
	sleep 0.1
done
sink_stat demo >/dev/null 2>&1 || {
	say "the sink did not start: $(tail -n 5 "$sink_dir/log")"
	exit 1
}
start_redis -n demo || exit 1

conf=$INTEG_DIR/demo.conf
integ_config "$conf" "$(printf '[redis]\nurl = %s\n' "$REDIS_URL")"
sed -i "/^\[mxsend\]/a max_inflight = $INFLIGHT" "$conf"

say "enqueueing $N messages to $DOMAINS domains"
t0=$(date +%s%3N)
awk -v n="$N" -v d="$DOMAINS" 'BEGIN {
	body = ""
	for (k = 0; k < 24; k++)
		body = body "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n"
	for (i = 1; i <= n; i++) {
		to = "user" i "@dom" (i % d) ".test"
		data = "From: news@sender.test\r\nTo: " to "\r\nSubject: demo " i "\r\nMessage-ID: <demo." i "@sender.test>\r\n\r\n" body
		id = "demo-" i
		printf "*9\r\n$4\r\nXADD\r\n$11\r\nmxsend:jobs\r\n$1\r\n*\r\n"
		printf "$4\r\nfrom\r\n$16\r\nnews@sender.test\r\n"
		printf "$2\r\nto\r\n$%d\r\n%s\r\n", length(to), to
		printf "$4\r\ndata\r\n$%d\r\n%s\r\n", length(data), data
	}
}' | redis-cli -p "$REDIS_PORT" --pipe >"$INTEG_DIR/pipe.log" 2>&1 || {
	say "enqueue failed: $(tail -n 3 "$INTEG_DIR/pipe.log")"
	exit 1
}
t1=$(date +%s%3N)
say "enqueued $(redis-cli -p "$REDIS_PORT" XLEN mxsend:jobs) jobs in $((t1 - t0)) ms"

say "running mxsend run --until-empty (max_inflight $INFLIGHT)"
t0=$(date +%s%3N)
if [ -t 2 ]; then
	timeout -k 5 900 "$MXSEND" run -c "$conf" --until-empty
else
	timeout -k 5 900 "$MXSEND" run -c "$conf" --until-empty 2>"$INTEG_DIR/run.log"
fi
rc=$?
t1=$(date +%s%3N)

# Summary from the results stream (the contract), not from mxsend's counters.
summary=$(redis-cli -p "$REDIS_PORT" --raw EVAL "
	local n = {delivered = 0, bounced = 0, deferred = 0, expired = 0, rejected = 0, held = 0}
	local tls, resumed, reused, mx = 0, 0, 0, {}
	local all = redis.call('XRANGE', KEYS[1], '-', '+')
	local span = 0
	if #all > 1 then
		span = tonumber(string.match(all[#all][1], '^%d+')) - tonumber(string.match(all[1][1], '^%d+'))
	end
	for _, e in ipairs(all) do
		local f = e[2]
		n[f[8]] = (n[f[8]] or 0) + 1
		if f[8] == 'delivered' then
			if f[22] ~= 'none' then tls = tls + 1 end
			if f[30] == 'yes' then resumed = resumed + 1 end
			if f[32] == 'yes' then reused = reused + 1 end
			mx[f[16]] = true
		end
	end
	local nmx = 0
	for _ in pairs(mx) do nmx = nmx + 1 end
	return {n.delivered, n.bounced, n.deferred, n.expired, n.rejected, n.held, tls, resumed, reused, nmx, span}
" 1 mxsend:results | tr '\n' ' ')
read -r delivered bounced deferred expired rejected held tls resumed reused nmx span <<<"$summary"
left=$(redis-cli -p "$REDIS_PORT" XLEN mxsend:jobs)
ms=$((t1 - t0))
rate=$(awk -v d="$delivered" -v ms="$ms" 'BEGIN { printf "%.0f", (ms > 0 ? d * 1000 / ms : 0) }')
srate=$(awk -v d="$delivered" -v ms="$span" 'BEGIN { printf "%.0f", (ms > 0 ? d * 1000 / ms : 0) }')
share() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f%%", (b > 0 ? 100 * a / b : 0) }'; }
cat <<EOF

mxsend demo: $N messages, $DOMAINS domains, $MXS MX hosts ($nmx used), max_inflight $INFLIGHT, $(nproc) CPUs
  delivered   $delivered
  bounced     $bounced
  deferred    $deferred   (results; retried)
  expired     $expired
  rejected    $rejected
  held        $held
  left        $left   (still queued)
  elapsed     $(awk -v ms="$ms" 'BEGIN { printf "%.1f s", ms / 1000 }')
  rate        $rate msgs/s over the whole run ($srate msgs/s from first to last result)
  TLS share   $(share "$tls" "$delivered")  (resumed sessions $(share "$resumed" "$delivered"), reused connections $(share "$reused" "$delivered"))
  mxsend      $(grep -h -m1 '^mxsend run: ' "$INTEG_DIR/run.log" 2>/dev/null | cut -d' ' -f3- || echo '(its own accounting line is above)')
  sink        $(sink_stat demo 2>/dev/null || echo '?')
  exit        $rc
EOF
[ "$rc" -eq 0 ] && [ "$delivered" -eq "$N" ]

#!/usr/bin/env bash
# bench/qload.sh: the load of bench scenario q (make bench): the path users run, Redis included.
#   qload.sh fill REDIS_PORT MESSAGES DOMAINS SIZE: empty the Redis database, queue MESSAGES
#     jobs of SIZE bytes (one recipient each, to d<i % DOMAINS>.bench.test) on mxsend:jobs
#     with redis-cli --pipe (before the measured part);
#   qload.sh run MXSEND REDIS_PORT CONFIG MESSAGES: drain them with `mxsend run -c CONFIG
#     --until-empty` and print one line in mxload's key=value form (bench/run.sh reads it
#     like mxload's):
#   cpu_s / cpu_us_per_msg: mxsend's own CPU (getrusage, all threads, start to exit: parsing
#     jobs, writing results and acknowledging them are included); redis_cpu_s: redis-server's
#     CPU over the same run, reported beside it, not in it;
#   msgs_per_s: delivered / the span from the first to the last result (--until-empty waits a
#     moment to be sure the queue stays empty; that wait is not delivery time);
#   hwm_kb: mxsend's peak RSS. Counts come from mxsend:results, the contract, not from logs.
set -u
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
usage() { echo "usage: qload.sh fill REDIS_PORT MESSAGES DOMAINS SIZE | run MXSEND REDIS_PORT CONFIG MESSAGES" >&2; exit 64; }
rcli() { redis-cli -p "$PORT" "$@"; }

# utime+stime of redis-server (clock ticks)
redis_ticks() { cpu_ticks "$(rcli --raw INFO server | awk -F: '/^process_id:/ { print $2 + 0 }')"; }

if [ "${1:-}" = fill ]; then
[ $# -eq 5 ] || usage
PORT=$2 N=$3 ND=$4 SIZE=$5
rcli FLUSHDB >/dev/null || exit 1
awk -v n="$N" -v nd="$ND" -v size="$SIZE" 'BEGIN {
	line = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n"
	for (i = 0; i < n; i++) {
		to = "user" i "@d" (i % nd) ".bench.test"
		hdr = "From: news@sender.test\r\nTo: " to "\r\nSubject: bench " i "\r\n\r\n"
		body = ""
		while (length(hdr) + length(body) + length(line) <= size)
			body = body line
		data = hdr body
		printf "*9\r\n$4\r\nXADD\r\n$11\r\nmxsend:jobs\r\n$1\r\n*\r\n"
		printf "$4\r\nfrom\r\n$16\r\nnews@sender.test\r\n"
		printf "$2\r\nto\r\n$%d\r\n%s\r\n", length(to), to
		printf "$4\r\ndata\r\n$%d\r\n%s\r\n", length(data), data
	}
}' | rcli --pipe >/dev/null 2>&1 || { echo "qload: enqueue failed" >&2; exit 1; }
[ "$(rcli XLEN mxsend:jobs)" = "$N" ] || { echo "qload: $(rcli XLEN mxsend:jobs) of $N jobs queued" >&2; exit 1; }
exit 0
fi
[ "${1:-}" = run ] && [ $# -eq 5 ] || usage
MXSEND=$2 PORT=$3 CONF=$4 N=$5

r0=$(redis_ticks)
"$MXSEND" run -c "$CONF" --until-empty 2>"$CONF.err" &
wait $!
rc=$?
r1=$(redis_ticks)
acct=$(grep -m1 '^mxsend run: ' "$CONF.err")
[ -n "$acct" ] || { echo "qload: no accounting line from mxsend run (exit $rc):" >&2; tail -n 5 "$CONF.err" >&2; exit 1; }

# delivered, resumed, reused, the span of the results (ms)
read -r delivered resumed reused span < <(rcli --raw EVAL "
	local d, res, reu = 0, 0, 0
	local all = redis.call('XRANGE', KEYS[1], '-', '+')
	for _, e in ipairs(all) do
		local f, m = e[2], {}
		for i = 1, #f, 2 do m[f[i]] = f[i + 1] end
		if m.status == 'delivered' then
			d = d + 1
			if m.resumed == 'yes' then res = res + 1 end
			if m.reused == 'yes' then reu = reu + 1 end
		end
	end
	local span = 0
	if #all > 1 then
		span = tonumber(string.match(all[#all][1], '^%d+')) - tonumber(string.match(all[1][1], '^%d+'))
	end
	return {d, res, reu, span}
" 1 mxsend:results | tr '\n' ' ')
hz=$(getconf CLK_TCK)
cpu=$(kv cpu_s "$acct")
workers=$(awk -F' *= *' '$1 == "workers" { print $2 }' "$CONF")
awk -v n="$N" -v w="${workers:-2}" -v span="$span" -v cpu="$cpu" \
	-v el="$(kv elapsed_s "$acct")" -v hwm="$(kv maxrss_kb "$acct")" -v d="$delivered" \
	-v res="$resumed" -v reu="$reused" -v rcpu="$((r1 - r0))" -v hz="$hz" 'BEGIN {
	s = span > 0 ? span / 1000 : el
	printf "messages=%d rcpts=%d concurrency=- workers=%d elapsed_s=%.3f msgs_per_s=%.0f cpu_s=%.3f cpu_us_per_msg=%.1f rss_kb=%d hwm_kb=%d base_rss_kb=0 delivered=%d deferred=%d bounced=0 resumed=%d reused=%d opened=%d p50_ms=- p99_ms=- peak_inflight=- run_elapsed_s=%.3f redis_cpu_s=%.3f redis_cpu_us_per_msg=%.1f\n", \
		n, 1, w, s, d / s, cpu, cpu * 1e6 / n, hwm, hwm, d, n - d, res, reu, d - reu, el, \
		rcpu / hz, rcpu / hz * 1e6 / n
}'
[ "$rc" = 0 ] && [ "$delivered" = "$N" ]

#!/usr/bin/env bash
# tests/integ/t_harness.sh: the harness keeps test runs that share the machine
# apart. Scripts run side by side (helpers, `make test`) draw ports from
# random blocks that overlap; a port handed out is reserved machine-wide
# (INTEG_PORTS_DIR) until its run exits, and start_redis accepts only its own
# server's PONG. Without these, a t_queue case once shared another run's Redis
# (same key names): a job left in its retry set that no process of the case
# had parked.
# shellcheck disable=SC2317 # case functions run indirectly, each in its run_case subshell
set -u
. "$(dirname "$0")/lib.sh"

integ_setup
integ_require redis-server redis-cli

# A port reserved by another live run is skipped; one whose run is gone is
# taken over; a run's reservations go when it exits.
t_port_reserved() {
	local p1 p2 p3 other child
	p1=$(integ_port) || return 1
	assert_eq "our reservation" "$$" "$(cat "$INTEG_PORTS_DIR/$p1/owner" 2>/dev/null)"
	# hand p1 back and let "another run" (a live process) hold it
	rm -f "$INTEG_PORTS_DIR/$p1/owner" && rmdir "$INTEG_PORTS_DIR/$p1"
	echo "$p1" >"$INTEG_DIR/next_port"
	integ_spawn other "$CASE_DIR/other.log" sleep 60
	other=$SPAWN_PID
	mkdir "$INTEG_PORTS_DIR/$p1" && echo "$other" >"$INTEG_PORTS_DIR/$p1/owner"
	p2=$(integ_port) || return 1
	assert_lt "the port reserved by a live run is skipped: $p1 <" "$p2" "$p1"
	assert_eq "its reservation is left alone" "$other" "$(cat "$INTEG_PORTS_DIR/$p1/owner")"
	# the other run is gone: its reservation is taken over
	stop_proc other KILL
	echo "$p1" >"$INTEG_DIR/next_port"
	p3=$(integ_port) || return 1
	assert_eq "the port of a run that is gone" "$p1" "$p3"
	assert_eq "taken over" "$$" "$(cat "$INTEG_PORTS_DIR/$p1/owner")"
	# a whole run (setup, one port, exit): nothing of it is left reserved
	# shellcheck disable=SC2016 # $1 is the child's
	child=$(KEEP=0 timeout 60 bash -c \
		'. "$1/lib.sh"; integ_setup; integ_port' _ "$INTEG_LIB_DIR" 2>/dev/null | tail -n 1)
	assert_match "the child run got a port" '^[0-9]+$' "$child"
	[ -n "$child" ] && assert_eq "its reservation after it exited" "gone" \
		"$([ -e "$INTEG_PORTS_DIR/$child" ] && echo present || echo gone)"
}

# Our redis-server cannot bind (another holds the port): start_redis fails
# and says so, instead of taking the other server's PONG for its own.
t_redis_foreign() {
	start_redis -n mine || return 1
	local p=$REDIS_PORT out rc
	stop_proc redis.mine TERM
	mkdir -p "$CASE_DIR/foreign"
	integ_spawn foreign "$CASE_DIR/foreign/log" redis-server --bind 127.0.0.1 --port "$p" \
		--daemonize no --save "" --appendonly no --dir "$CASE_DIR/foreign"
	wait_ping() { [ "$(redis_ping "$p")" = PONG ]; }
	local i
	for ((i = 0; i < 50; i++)); do wait_ping && break; sleep 0.1; done
	wait_ping || fail "the foreign redis-server did not start" || return 1
	timeout 5 redis-cli -p "$p" XADD mxsend:jobs '*' from x@src.test to y@ok.test data x >/dev/null
	out=$(start_redis -n mine 2>&1)
	rc=$?
	assert_eq "start_redis on a port another redis-server holds: status" 1 "$rc"
	assert_match "it names the other server" "127.0.0.1:$p is answered by another redis-server \\(pid [0-9]+\\), not ours" "$out"
	assert_eq "the other server's queue is untouched" 1 "$(timeout 5 redis-cli -p "$p" XLEN mxsend:jobs)"
}

run_case "ports: reserved machine-wide while a run holds them, taken over when it is gone, released at exit" t_port_reserved
run_case "start_redis refuses a PONG from another run's redis-server" t_redis_foreign
integ_finish

# shellcheck shell=bash
# bench/lib.sh: helpers shared by the bench scripts (sourced, never run): run.sh, postfix.sh,
# qload.sh. Set BENCH_NAME (the prefix of die's message) and ONLY (",a1,b0," or "") first.

want() { [ -z "${ONLY:-}" ] || [[ $ONLY == *",$1,"* ]]; } # want ID: ID selected by --only

say() { printf '%s\n' "$*" >&2; }
die() {
	say "${BENCH_NAME:-bench}: $*"
	exit 1
}

# kv KEY LINE: the value of KEY=... in a key=value line ("" if absent).
kv() {
	local w
	for w in $2; do
		[ "${w%%=*}" = "$1" ] && { echo "${w#*=}"; return 0; }
	done
	echo ""
}

# cpu_ticks PID: utime+stime of the process (all threads), clock ticks; 0 if gone.
cpu_ticks() {
	local line rest
	if [ -z "$1" ] || ! read -r line 2>/dev/null <"/proc/$1/stat"; then
		echo 0
		return
	fi
	rest=${line##*) }
	# shellcheck disable=SC2086
	set -- $rest
	echo $((${12} + ${13}))
}

# busy_ticks: CPU ticks all CPUs spent not idle (/proc/stat), to see what else ran.
busy_ticks() {
	local _cpu u n s _idle _io irq soft steal _rest
	read -r _cpu u n s _idle _io irq soft steal _rest </proc/stat
	echo $((u + n + s + irq + soft + steal))
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

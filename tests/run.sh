#!/usr/bin/env bash
# Runs unit tests (build/asan/test_*, and build/fuzz/replay_* over tests/fuzz/seeds/*) and
# integration tests (tests/integ/t_*.sh).
# Every program prints "ok - NAME" / "not ok - NAME" lines; we count them.
# A program that exits non-zero without printing a "not ok" line counts as one
# failure. Last line: "N passed, N failed".
set -u
cd "$(dirname "$0")/.."
what=${1:-all}
pass=0; fail=0
run_one() { # name, timeout seconds, command...
	local name=$1 limit=$2; shift 2
	local out rc t0=$SECONDS
	out=$(mktemp)
	timeout -k 5 "$limit" "$@" >"$out" 2>&1; rc=$?
	local took=$((SECONDS - t0))
	local p f
	p=$(grep -c '^ok - ' "$out"); f=$(grep -c '^not ok - ' "$out")
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		f=1; echo "not ok - $name (exit $rc)" >>"$out"
	fi
	pass=$((pass + p)); fail=$((fail + f))
	if [ "$f" -gt 0 ]; then
		echo "== $name: $p passed, $f failed (${took} s)"; cat "$out"
	else
		echo "== $name: $p passed (${took} s)"
	fi
	rm -f "$out"
}
if [ "$what" = all ] || [ "$what" = unit ]; then
	for t in build/asan/test_*; do
		[ -x "$t" ] || continue
		ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 run_one "unit/$(basename "$t")" 120 "$t"
	done
	# libFuzzer targets' kept inputs (tests/fuzz/replay.c): one case per target
	for t in build/fuzz/replay_*; do
		[ -x "$t" ] || continue
		n=${t##*/replay_}
		ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 run_one "fuzz/$n" 120 "$t" "tests/fuzz/seeds/$n"
	done
fi
if [ "$what" = all ] || [ "$what" = integ ]; then
	for t in tests/integ/t_*.sh; do
		[ -f "$t" ] || continue
		run_one "integ/$(basename "$t" .sh)" 600 bash "$t"
	done
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]

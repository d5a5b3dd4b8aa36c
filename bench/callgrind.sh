#!/usr/bin/env bash
# bench/callgrind.sh [LABEL=TREE ...]: instructions per call (valgrind callgrind's Ir: the same
# to the instruction on every run, unlike CPU time on a shared machine) of the per-message
# functions bench/hotpath.c drives (msg_wire_prepare, job_set_outcome, job_decode), for A/B
# comparisons of builds. TREE is a source tree with build/libmxsend.a (make all); bench/hotpath.c
# of this tree is compiled against it, so an older checkout works too. Default: cur=<this tree>.
#   git worktree add /tmp/base <commit> && make -C /tmp/base build/libmxsend.a
#   bench/callgrind.sh base=/tmp/base new=.
# Prints, per function and build, (Ir(2N) - Ir(N)) / N: the cost of one call without the
# start-up. The callgrind files stay in build/callgrind/ (callgrind_annotate FILE).
# mxload and mxsend themselves cannot run under valgrind 3.19 (it holds its lock across a
# blocking io_uring_enter, so the other threads never run); perf here has no instruction counter.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/build/callgrind
N=${CG_N:-1000}
command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind is not installed" >&2; exit 1; }
[ $# -gt 0 ] || set -- "cur=$ROOT"
mkdir -p "$OUT"
# the programs' link line (Makefile: PKG_LIBS, LDLIBS, jemalloc)
LIBS="-luring -lssl -lcrypto -lcares -lhiredis -linih -ljansson -lz -lpthread -l:libjemalloc_pic.a -lm -ldl"
printf '%-10s %-8s %10s\n' function build Ir/call
bins=()
for b in "$@"; do
	label=${b%%=*} tree=$(cd "${b#*=}" && pwd) || exit 1
	[ -f "$tree/build/libmxsend.a" ] || { echo "callgrind.sh: $tree/build/libmxsend.a missing (make all)" >&2; exit 1; }
	cc -std=gnu11 -O2 -g -I"$tree" -I/usr/include/hiredis -o "$OUT/hotpath.$label" "$ROOT/bench/hotpath.c" \
		"$tree/build/libmxsend.a" $LIBS || exit 1
	bins+=("$label")
done
for f in wire outcome decode; do
	for label in "${bins[@]}"; do
		ir=()
		for n in "$N" $((2 * N)); do
			o=$OUT/$f.$label.$n.out
			timeout 300 valgrind --tool=callgrind --callgrind-out-file="$o" "$OUT/hotpath.$label" "$f" "$n" \
				>/dev/null 2>"$OUT/$f.$label.$n.log" || { echo "$f $label: failed (see $OUT/$f.$label.$n.log)" >&2; continue 2; }
			ir+=("$(awk '/^totals:/ { print $2 }' "$o")")
		done
		printf '%-10s %-8s %10d\n' "$f" "$label" $(((ir[1] - ir[0]) / N))
	done
done

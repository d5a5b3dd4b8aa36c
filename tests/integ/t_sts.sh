#!/usr/bin/env bash
# tests/integ/t_sts.sh: the TLS policy feature, MTA-STS (RFC 8461) and the rules that
# apply without it, every case in one place, in three parts (tests/integ/sts/, each a
# complete script with its own servers, runnable alone):
#   sts/check.sh  discovery and fetch: the _mta-sts TXT record, the policy over HTTPS
#                 (sender/policy/https.c: chunked, 64 KiB, HTTP/1.0, redirects, media types,
#                 certificates, stalls), policy parsing, and `mxsend check`;
#   sts/send.sh   the policy in delivery through `mxsend send`: enforce / testing / none,
#                 MX pruning, STARTTLS stripped, policy changes, and on_tls_failure
#                 (defer, bounce, hold, next-mx, plaintext) without MTA-STS;
#   sts/run.sh    the queue path, `mxsend run --until-empty`: results' policy fields,
#                 the persisted policy (mxsend:sts:DOMAIN) across restarts, and the
#                 TLSRPT counters it keeps (reports themselves: t_tlsrpt.sh).
# -k PATTERN / ONLY / --list (lib.sh) apply to every part. Whole file: about a minute.
set -u
# shellcheck source=tests/integ/lib.sh
. "$(dirname "$0")/lib.sh"
integ_parts "$INTEG_LIB_DIR/sts/check.sh" "$INTEG_LIB_DIR/sts/send.sh" "$INTEG_LIB_DIR/sts/run.sh"

#!/usr/bin/env bash
# t_tlsrpt.sh: TLSRPT (RFC 8460) reports: counters in a real redis-server
# (written by tlscache/tlsrpt.c's own event -> commands code, through a small
# driver, tests/integ/tlsrpt_driver.c: build/asan/tlsrpt_driver, built by the
# Makefile), `mxsend tlsrpt --dry-run`
# (pretty JSON checked with python3), a mailto: rua (the multipart/report
# message lands in the jobs stream, its gzip attachment decodes to the same
# report), https: ruas POSTed to nginx on loopback (access log: method and
# content type; the body nginx kept decodes to the report), a failing POST
# (claim released, retried by the next run), no resending on a second run.
# Report mails are DKIM-signed (RFC 8460 3): the keys' TXT records are published
# in unbound, and python3-dkim (Debian's dkimpy, an independent verifier) checks
# the signature of the report as the rua mailbox (a sink behind the domain's MX,
# the job delivered by `mxsend run`) received it: RSA from [tlsrpt] in the
# config, Ed25519 (RFC 8463) from the flags; no key: a mailto: rua fails, exit 78.
# Loopback only: unbound 127.0.47.53, nginx 127.0.47.1, the rua sink 127.0.47.25,
# redis 127.0.0.1; all on private ports. Whole file: a few seconds.
# MXSEND_BIN=path runs another mxsend binary (one with `tlsrpt` wired in).
# shellcheck disable=SC2317,SC2031 # case functions run indirectly, each in its run_case subshell
set -u
# shellcheck source=tests/integ/lib.sh
. "$(dirname "$0")/lib.sh"

integ_setup report.rpt-https.test mta-sts.rpt-send.test mx.rpt-send.test
integ_require mxsend mxsink unbound unbound-checkconf nginx redis-server redis-cli python3 timeout \
	openssl base64
# dkimpy is Debian's (python3-dkim, python3-nacl for Ed25519): /usr/bin/python3, whatever
# python3 comes first in PATH
SYS_PY=/usr/bin/python3
"$SYS_PY" -c 'import dkim, nacl, dns.resolver' 2>/dev/null ||
	integ_missing "python3-dkim, python3-nacl, python3-dnspython (make deps)"
[ -n "${MXSEND_BIN:-}" ] && MXSEND=$MXSEND_BIN
if [ -x "$MXSEND" ] && ! "$MXSEND" tlsrpt --help >/dev/null 2>&1; then
	integ_missing "mxsend tlsrpt (not wired into main.c; MXSEND_BIN=... to test another binary)"
fi

DAY=2024-06-01
DAY0=1717200000 # $DAY 00:00:00Z
HTTPS_ADDR=127.0.47.1
NGINX_PORT=$(integ_port) || integ_missing "no free port"
SINK_PORT=$(integ_port) || integ_missing "no free port"
RUA_ADDR=127.0.47.25
SEND_MX_ADDR=127.0.47.26 # mx.rpt-send.test: MTA-STS enforce domain for `mxsend send`

# --- DKIM keys (RSA 2048 in the config, Ed25519 by flags) and their TXT records ----
DKIM_RSA=$INTEG_DIR/dkim-rsa.pem DKIM_ED=$INTEG_DIR/dkim-ed.pem
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$DKIM_RSA" 2>/dev/null &&
	openssl genpkey -algorithm ED25519 -out "$DKIM_ED" 2>/dev/null ||
	integ_missing "openssl genpkey (DKIM keys)"
# RSA: SubjectPublicKeyInfo (~400 characters: two TXT strings); Ed25519: the raw 32 bytes
RSA_P=$(openssl pkey -in "$DKIM_RSA" -pubout -outform DER 2>/dev/null | base64 -w0)
ED_P=$(openssl pkey -in "$DKIM_ED" -pubout -outform DER 2>/dev/null | tail -c 32 | base64 -w0)

# --- DNS ------------------------------------------------------------------------
ZONE=$INTEG_DIR/zone.txt
cat >"$ZONE" <<EOF
report.rpt-https.test. A $HTTPS_ADDR
_smtp._tls.rpt-mail.test. TXT "v=TLSRPTv1; rua=mailto:tls%2Dreports@rpt-mail.test?subject=x"
_smtp._tls.rpt-https.test. TXT "v=TLSRPTv1;rua=https://report.rpt-https.test:$NGINX_PORT/v1"
_smtp._tls.rpt-both.test. TXT "v=TLSRPTv1; rua=mailto:rua@rpt-both.test,https://report.rpt-https.test/v1"
_smtp._tls.rpt-fail.test. TXT "v=TLSRPTv1; rua=https://report.rpt-https.test:$NGINX_PORT/fail"
_smtp._tls.rpt-slow.test. TXT "v=TLSRPTv1; rua=https://report.rpt-https.test:$NGINX_PORT/slow"
_smtp._tls.rpt-none.test. TXT "v=spf1 -all"
_smtp._tls.rpt-ed.test. TXT "v=TLSRPTv1; rua=mailto:rua@rpt-ed.test"
_smtp._tls.rpt-nokey.test. TXT "v=TLSRPTv1; rua=mailto:rua@rpt-nokey.test"
rpt-mail.test. MX 10 mx.rpt-mail.test.
rpt-ed.test. MX 10 mx.rpt-mail.test.
mx.rpt-mail.test. A $RUA_ADDR
rpt2026._domainkey.client.test. TXT "v=DKIM1; k=rsa; s=tlsrpt; p=${RSA_P:0:200}" "${RSA_P:200}"
ed2026._domainkey.client.test. TXT "v=DKIM1; k=ed25519; s=tlsrpt; p=$ED_P"
rpt-send.test. MX 10 mx.rpt-send.test.
mx.rpt-send.test. A $SEND_MX_ADDR
_mta-sts.rpt-send.test. TXT "v=STSv1; id=send1"
mta-sts.rpt-send.test. A $HTTPS_ADDR
_smtp._tls.rpt-send.test. TXT "v=TLSRPTv1; rua=mailto:rua@rpt-send.test"
EOF
start_unbound -a 127.0.47.53 "$ZONE" || integ_missing "unbound did not start"
start_redis -n redis || integ_missing "redis-server did not start"
if [ -z "$INTEG_MISSING" ]; then # the rua mailbox of rpt-mail.test and rpt-ed.test
	start_sink rua --listen "$RUA_ADDR:$SINK_PORT" || integ_missing "mxsink did not start"
	start_sink sendmx --listen "$SEND_MX_ADDR:$SINK_PORT" || integ_missing "mxsink (sendmx) did not start"
fi

CONF=$INTEG_DIR/tlsrpt.ini
integ_config "$CONF" "$(printf '[redis]\nurl = %s\n\n[tlsrpt]\ndkim_key = %s\ndkim_selector = rpt2026\n' \
	"${REDIS_URL:-redis://127.0.0.1:1/0}" "$DKIM_RSA")"
NOKEYCONF=$INTEG_DIR/tlsrpt-nokey.ini
integ_config "$NOKEYCONF" "$(printf '[redis]\nurl = %s\n' "${REDIS_URL:-redis://127.0.0.1:1/0}")"
NOCONF=$INTEG_DIR/tlsrpt-off.ini
integ_config "$NOCONF" "$(printf '[redis]\nurl = %s\n\n[tls]\ntlsrpt = no\n' "${REDIS_URL:-redis://127.0.0.1:1/0}")"

# --- the driver: events -> Redis (tlscache/tlsrpt.c, queue/tlsrpt_store.c), stream entries -> files --------
# tests/integ/tlsrpt_driver.c, built by the Makefile (make test) with the project's
# warnings and ASan/UBSan; TLSRPT_DRV=... runs another build of it.
DRV=${TLSRPT_DRV:-$INTEG_ROOT/build/asan/tlsrpt_driver}
[ -x "$DRV" ] || integ_missing "$DRV (not built: make build/asan/tlsrpt_driver, or make test)"

# --- nginx: the https: rua endpoints ---------------------------------------------
NGX=$INTEG_DIR/nginx
ECHO_MOD=/usr/lib/nginx/modules/ngx_http_echo_module.so
[ -f "$ECHO_MOD" ] || integ_missing "nginx echo module (libnginx-mod-http-echo)"
# start_nginx (lib.sh): no default server (the first block is), this log format
NGINX_DEFAULT=no
# shellcheck disable=SC2016 # nginx's variables, not the shell's
NGINX_LOG_FORMAT='$request_method $uri $status ct="$content_type" len=$content_length host=$host'
if [ -z "$INTEG_MISSING" ]; then
	start_nginx "load_module $ECHO_MOD;" <<EOF || integ_missing "nginx did not start"
	server {
		listen $HTTPS_ADDR:$NGINX_PORT ssl;
		server_name report.rpt-https.test;
		# the body is read and kept in a file (client_body_in_file_only),
		# the answer is 204 No Content
		location = /v1 { client_body_in_file_only on; echo_status 204; echo_read_request_body; }
		location = /fail { return 500; }
		location = /slow { echo_sleep 20; echo ok; }
	}
	server {
		listen $HTTPS_ADDR:$NGINX_PORT ssl;
		server_name mta-sts.rpt-send.test;
		location = /.well-known/mta-sts.txt {
			default_type text/plain;
			return 200 "version: STSv1\\nmode: enforce\\nmx: mx.rpt-send.test\\nmax_age: 86400\\n";
		}
	}
EOF
fi

# --- counters for $DAY (and one for the next day, which must not show) -------------
T=$((DAY0 + 43200))
MXP='mx1.rpt-mail.test,*.rpt-mail.test'
if [ -z "$INTEG_MISSING" ]; then
	tr '|' '\t' <<EOF | "$DRV" record "$REDIS_URL" || integ_missing "counters not recorded"
rpt-mail.test|sts|20240601T0000|enforce|$MXP|86400|mx1.rpt-mail.test|127.0.47.10|-|-|-|7|$T
rpt-mail.test|sts|20240601T0000|enforce|$MXP|86400|mx1.rpt-mail.test|127.0.47.10|192.0.2.25|certificate-expired|certificate has expired|2|$T
rpt-mail.test|sts|20240601T0000|enforce|$MXP|86400|mx2.rpt-mail.test|127.0.47.11|-|starttls-not-supported|STARTTLS not offered|1|$T
rpt-mail.test|sts|20240601T0000|enforce|$MXP|86400|mx1.rpt-mail.test|127.0.47.10|-|-|-|5|$((T + 86400))
rpt-https.test|-|-|-|-|0|mx.rpt-https.test|127.0.47.12|-|-|-|3|$T
rpt-https.test|-|-|-|-|0|mx.rpt-https.test|127.0.47.12|-|validation-failure|self-signed certificate|1|$T
rpt-both.test|-|-|-|-|0|mx.rpt-both.test|127.0.47.13|-|-|-|4|$T
rpt-fail.test|-|-|-|-|0|mx.rpt-fail.test|127.0.47.14|-|-|-|1|$T
rpt-none.test|-|-|-|-|0|mx.rpt-none.test|127.0.47.15|-|-|-|1|$T
rpt-slow.test|-|-|-|-|0|mx.rpt-slow.test|127.0.47.16|-|-|-|1|$T
rpt-ed.test|-|-|-|-|0|mx.rpt-ed.test|127.0.47.17|-|-|-|2|$T
rpt-nokey.test|-|-|-|-|0|mx.rpt-nokey.test|127.0.47.18|-|-|-|1|$T
EOF
fi

# --- helpers --------------------------------------------------------------------

# tlsrpt ARG...: `mxsend tlsrpt -c CONF --day DAY ARG...` (30 s bound); stdout in
# $CASE_DIR/out, stderr in $CASE_DIR/err; RUN_RC, RUN_MS.
tlsrpt() {
	timed_run 30 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" tlsrpt -c "$CONF" --day "$DAY" --timeout 10 "$@"
}

# show_run, expect_rc (lib.sh): for `mxsend tlsrpt`
SHOW_RUN_CMD="mxsend tlsrpt"
SHOW_RUN_OUT=60
SHOW_RUN_ERR=10

# dkim_verify FILE: python3-dkim verifies the DKIM signature of the message in FILE,
# fetching the key from unbound; prints "ok a=.. d=.. s=..", or what is wrong and
# returns 1.
dkim_verify() {
	"$SYS_PY" - "$1" "$DNS_ADDR" "$DNS_PORT" <<'EOF'
import email, re, sys
import dkim, dns.resolver
raw = open(sys.argv[1], "rb").read()
res = dns.resolver.Resolver(configure=False)
res.nameservers = [sys.argv[2]]
res.port = int(sys.argv[3])
def txt(name, timeout=5):
    ans = res.resolve(name.decode().rstrip("."), "TXT", lifetime=timeout)
    return b"".join(b"".join(r.strings) for r in ans)
bad = []
try: # strict: a report, signed with a key whose record says s=tlsrpt (RFC 8460 3)
    if not dkim.DKIM(raw, tlsrpt="strict").verify(dnsfunc=txt):
        bad.append("dkimpy: the signature does not verify")
except Exception as e:
    bad.append("dkimpy: %s" % e)
sig = re.sub(r"\s+", "", str(email.message_from_bytes(raw)["DKIM-Signature"] or ""))
tags = dict(t.split("=", 1) for t in sig.split(";") if "=" in t)
if "l" in tags:
    bad.append("l= present (RFC 8460 3 forbids it)")
h = tags.get("h", "").split(":")
for f in ("from", "subject", "date", "tls-report-domain", "tls-report-submitter", "content-type"):
    if f not in h:
        bad.append("%s not signed (h=%s)" % (f, tags.get("h")))
print("\n".join(bad) or "ok a=%s d=%s s=%s" % (tags.get("a"), tags.get("d"), tags.get("s")))
sys.exit(1 if bad else 0)
EOF
}

# deliver_jobs: `mxsend run --until-empty` (15 s bound) delivers the queued jobs.
deliver_jobs() {
	timed_run 15 "$CASE_DIR/run.out" "$CASE_DIR/run.err" "$MXSEND" run -c "$CONF" --until-empty
	[ "$RUN_RC" = 0 ] || fail "mxsend run --until-empty: exit $RUN_RC" "$(tail -n 5 "$CASE_DIR/run.err")"
}

# expect_out ERE, rcli PORT ARG... (lib.sh)

# check_report JSONFILE DOMAIN: the report's fields and counts for DOMAIN
# (python3: only the standard library). Prints what is wrong; exit 1 then.
check_report() {
	python3 - "$1" "$2" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
dom = sys.argv[2]
bad = []
def want(what, got, exp):
    if got != exp:
        bad.append("%s: expected %r, got %r" % (what, exp, got))
for k in ("organization-name", "date-range", "contact-info", "report-id", "policies"):
    if k not in r:
        bad.append("missing " + k)
want("organization-name", r.get("organization-name"), "client.test")
want("contact-info", r.get("contact-info"), "postmaster@client.test")
want("date-range", r.get("date-range"), {"start-datetime": "2024-06-01T00:00:00Z",
                                         "end-datetime": "2024-06-01T23:59:59Z"})
pols = r.get("policies", [])
want("number of policies", len(pols), 1)
p = pols[0] if pols else {}
pol, s, fd = p.get("policy", {}), p.get("summary", {}), p.get("failure-details", [])
want("policy-domain", pol.get("policy-domain"), dom)
if dom == "rpt-mail.test":
    want("policy-type", pol.get("policy-type"), "sts")
    want("policy-string", pol.get("policy-string"), ["version: STSv1", "mode: enforce",
         "mx: mx1.rpt-mail.test", "mx: *.rpt-mail.test", "max_age: 86400"])
    want("mx-host", pol.get("mx-host"), ["mx1.rpt-mail.test", "*.rpt-mail.test"])
    want("successes", s.get("total-successful-session-count"), 7)
    want("failures", s.get("total-failure-session-count"), 3)
    want("failure-details", fd, [
        {"result-type": "certificate-expired", "sending-mta-ip": "192.0.2.25",
         "receiving-mx-hostname": "mx1.rpt-mail.test", "receiving-ip": "127.0.47.10",
         "failed-session-count": 2, "failure-reason-code": "certificate has expired"},
        {"result-type": "starttls-not-supported", "receiving-mx-hostname": "mx2.rpt-mail.test",
         "receiving-ip": "127.0.47.11", "failed-session-count": 1,
         "failure-reason-code": "STARTTLS not offered"}])
elif dom == "rpt-https.test":
    want("policy-type", pol.get("policy-type"), "no-policy-found")
    want("no policy-string", "policy-string" in pol, False)
    want("successes", s.get("total-successful-session-count"), 3)
    want("failures", s.get("total-failure-session-count"), 1)
    want("failure result", [f.get("result-type") for f in fd], ["validation-failure"])
elif dom == "rpt-both.test":
    want("successes", s.get("total-successful-session-count"), 4)
    want("failures", s.get("total-failure-session-count"), 0)
    want("no failure-details", "failure-details" in p, False)
for b in bad:
    print(b)
sys.exit(1 if bad else 0)
EOF
}

# split_dry_run: the JSON documents of a --dry-run in $CASE_DIR/json.N (N = 0..)
split_dry_run() {
	python3 - "$CASE_DIR/out" "$CASE_DIR/json" <<'EOF'
import json, sys
text = "".join(l for l in open(sys.argv[1]) if not l.startswith("tlsrpt "))
dec, i, n = json.JSONDecoder(), 0, 0
while True:
    while i < len(text) and text[i].isspace():
        i += 1
    if i >= len(text):
        break
    doc, i = dec.raw_decode(text, i)
    json.dump(doc, open("%s.%d" % (sys.argv[2], n), "w"))
    n += 1
print(n)
EOF
}

expect_report() { # FILE DOMAIN
	local why
	why=$(check_report "$1" "$2") && return 0
	fail "report for $2: $why"
	return 1
}

# --- 1. dry run --------------------------------------------------------------------
t_dry_one() {
	tlsrpt --dry-run rpt-mail.test
	expect_rc 0 || return 1
	expect_out "^tlsrpt day=2024-06-01 domain=rpt-mail\.test rua=mailto:tls%2Dreports@rpt-mail\.test\?subject=x result=dry-run$"
	assert_match "pretty JSON (indented)" '^  "organization-name": "client\.test",$' "$(cat "$CASE_DIR/out")"
	assert_eq "JSON documents" 1 "$(split_dry_run)"
	expect_report "$CASE_DIR/json.0" rpt-mail.test
	assert_eq "jobs enqueued by a dry run" 0 "$(rcli "$REDIS_PORT" XLEN mxsend:jobs)"
	assert_eq "sent marks left by a dry run" 0 "$(rcli "$REDIS_PORT" EXISTS "mxsend:tlsrpt:sent:$DAY:rpt-mail.test")"
	assert_lt "elapsed ms" 5000 "$RUN_MS"
}
run_case "--dry-run DOMAIN: the RFC 8460 JSON (fields, counts, policy-string) and its rua; nothing sent" t_dry_one

t_dry_all() {
	tlsrpt --dry-run
	expect_rc 0 || return 1
	local d
	for d in rpt-both rpt-ed rpt-fail rpt-https rpt-mail rpt-nokey rpt-slow; do
		expect_out "^tlsrpt day=2024-06-01 domain=$d\.test rua=(mailto|https):[^ ]+ result=dry-run$"
	done
	# the key's DNS record, once, as the zone publishes it (two strings joined)
	expect_out "^tlsrpt dkim=rpt2026\._domainkey\.client\.test txt=\"$(re_escape "v=DKIM1; k=rsa; s=tlsrpt; p=$RSA_P")\"\$"
	assert_eq "dkim lines" 1 "$(grep -c '^tlsrpt dkim=' "$CASE_DIR/out")"
	expect_out '^tlsrpt day=2024-06-01 domain=rpt-none\.test rua=none result=none why="no TLSRPT record"$'
	expect_out "^tlsrpt day=2024-06-01 domain=rpt-both\.test rua=https://report\.rpt-https\.test/v1 result=dry-run$"
	assert_eq "JSON documents (one per domain with a rua)" 7 "$(split_dry_run)"
	expect_report "$CASE_DIR/json.3" rpt-https.test
	expect_report "$CASE_DIR/json.0" rpt-both.test
	# the next day holds only rpt-mail.test's 5 sessions
	tlsrpt --dry-run --day 2024-06-02
	expect_rc 0
	assert_match "next day" '"total-successful-session-count": 5' "$(cat "$CASE_DIR/out")"
	tlsrpt --dry-run --day 2024-05-31
	expect_rc 0
	assert_eq "a day without counters prints only the DKIM record" "tlsrpt dkim=rpt2026._domainkey.client.test" "$(cut -d" " -f1,2 "$CASE_DIR/out")"
}
run_case "--dry-run: every domain of the day, sorted; a domain without TLSRPT record; other days" t_dry_all

# --- 2. mailto: ----------------------------------------------------------------------
t_mailto() {
	tlsrpt --dry-run rpt-mail.test
	split_dry_run >/dev/null
	tlsrpt rpt-mail.test
	expect_rc 0 || return 1
	expect_out '^tlsrpt day=2024-06-01 domain=rpt-mail\.test rua=mailto:tls%2Dreports@rpt-mail\.test\?subject=x result=queued job=[0-9]+-[0-9]+ report_id=20240601\.[0-9a-f]{16}@client\.test$'
	local rid
	rid=$(sed -n 's/.* report_id=\([^ ]*\)$/\1/p' "$CASE_DIR/out")
	mkdir -p "$CASE_DIR/x"
	assert_eq "jobs in the stream" 1 "$("$DRV" xdump 127.0.0.1 "$REDIS_PORT" mxsend:jobs "$CASE_DIR/x")"
	local j=$CASE_DIR/x/0
	assert_eq "job from" "tlsrpt-noreply@client.test" "$(cat "$j/from")"
	assert_eq "job to (percent-decoded, query dropped)" "tls-reports@rpt-mail.test" "$(cat "$j/to")"
	assert_eq "job exempt" tlsrpt "$(cat "$j/exempt")"
	assert_match "job exempt_mac (the proof keyed from [tlsrpt] dkim_key)" '^[0-9a-f]{64}$' "$(cat "$j/exempt_mac")"
	assert_eq "job expires (RFC 8460 5.3: retried for up to 24 hours)" 86400 "$(cat "$j/expires")"
	assert_eq "job id" "$rid" "$(cat "$j/id")"
	assert_eq "no tls field" no "$([ -e "$j/tls" ] && echo yes || echo no)"
	local why
	why=$(python3 - "$j/data" "$CASE_DIR/json.0" "$rid" "$CASE_DIR/att.json" <<'EOF'
import email, email.policy, gzip, json, re, sys
raw = open(sys.argv[1], "rb").read()
bad = []
if b"\n" in raw.replace(b"\r\n", b""):
    bad.append("bare LF in the message")
for l in raw.split(b"\r\n"):
    if len(l) > 998:
        bad.append("line over 998 octets")
m = email.message_from_bytes(raw, policy=email.policy.default)
def want(what, got, exp):
    if got != exp:
        bad.append("%s: expected %r, got %r" % (what, exp, got))
rid = sys.argv[3]
want("Content-Type", m.get_content_type(), "multipart/report")
want("report-type", m.get_param("report-type"), "tlsrpt")
want("TLS-Report-Domain", str(m["TLS-Report-Domain"]), "rpt-mail.test")
want("TLS-Report-Submitter", str(m["TLS-Report-Submitter"]), "client.test")
want("Subject", re.sub(r"\s+", " ", str(m["Subject"])),
     "Report Domain: rpt-mail.test Submitter: client.test Report-ID: <%s>" % rid)
want("To", str(m["To"]), "tls-reports@rpt-mail.test")
parts = list(m.iter_parts())
want("parts", [p.get_content_type() for p in parts], ["text/plain", "application/tlsrpt+gzip"])
att = parts[1]
want("transfer encoding", att["Content-Transfer-Encoding"], "base64")
fn = att.get_filename() or ""
if not re.fullmatch(r"client\.test!rpt-mail\.test!1717200000!1717286399![0-9a-f]{16}\.json\.gz", fn):
    bad.append("attachment file name %r" % fn)
body = att.get_payload(decode=False)
for l in body.strip().split("\n"):
    if len(l.rstrip("\r")) > 76:
        bad.append("base64 line longer than 76")
        break
rep = json.loads(gzip.decompress(att.get_payload(decode=True)))
json.dump(rep, open(sys.argv[4], "w"))
want("report-id", rep.get("report-id"), rid)
dry = json.load(open(sys.argv[2]))
dry["report-id"] = rep["report-id"]
want("the same report as the dry run", rep, dry)
print("\n".join(bad))
sys.exit(1 if bad else 0)
EOF
	) || fail "report message: $why"
	expect_report "$CASE_DIR/att.json" rpt-mail.test
	assert_match "sent mark" "^sent $(re_escape "$rid") [0-9]+$" \
		"$(rcli "$REDIS_PORT" HGET "mxsend:tlsrpt:sent:$DAY:rpt-mail.test" 'mailto:tls%2Dreports@rpt-mail.test?subject=x')"
	# a second run sends nothing
	tlsrpt rpt-mail.test
	expect_rc 0
	expect_out "^tlsrpt day=2024-06-01 domain=rpt-mail\.test rua=mailto:[^ ]+ result=skipped why=\"sent $(re_escape "$rid") [0-9]+\"$"
	assert_eq "jobs after a second run" 1 "$(rcli "$REDIS_PORT" XLEN mxsend:jobs)"
	# the signature as enqueued, and as the rua mailbox received it
	dkim_verify "$j/data" >"$CASE_DIR/dkim.q" || fail "DKIM of the queued report: $(cat "$CASE_DIR/dkim.q")"
	deliver_jobs
	local eml
	eml=$(sink_find_msg rua tls-reports@rpt-mail.test 5) || fail "the rua mailbox has no report" || return 1
	why=$(dkim_verify "$eml") || fail "DKIM of the delivered report: $why"
	assert_eq "dkimpy" "ok a=rsa-sha256 d=client.test s=rpt2026" "$why"
	# a changed byte in a signed field: dkimpy must say no (the check can fail)
	sed 's/^Subject: Report/Subject: Rep0rt/' "$eml" >"$CASE_DIR/tampered.eml"
	dkim_verify "$CASE_DIR/tampered.eml" >/dev/null && fail "dkimpy accepted a tampered report"
	return 0
}
run_case "mailto: rua: a multipart/report message enqueued (headers, attachment = the report), DKIM-signed (RSA, [tlsrpt] dkim_key), delivered to the rua mailbox where python3-dkim verifies it; not resent" t_mailto

t_ed25519() {
	local k=(--dkim-key "$DKIM_ED" --dkim-selector ed2026)
	tlsrpt --dry-run "${k[@]}" rpt-ed.test
	expect_rc 0
	expect_out "^tlsrpt dkim=ed2026\._domainkey\.client\.test txt=\"$(re_escape "v=DKIM1; k=ed25519; s=tlsrpt; p=$ED_P")\"\$"
	tlsrpt "${k[@]}" rpt-ed.test
	expect_rc 0 || return 1
	expect_out '^tlsrpt day=2024-06-01 domain=rpt-ed\.test rua=mailto:rua@rpt-ed\.test result=queued '
	deliver_jobs
	local eml why
	eml=$(sink_find_msg rua rua@rpt-ed.test 5) || fail "the rua mailbox has no report for rpt-ed.test" || return 1
	why=$(dkim_verify "$eml") || fail "DKIM of the delivered report: $why"
	assert_eq "dkimpy" "ok a=ed25519-sha256 d=client.test s=ed2026" "$why"
}
run_case "Ed25519 DKIM key from the flags (RFC 8463): --dry-run prints the TXT record to publish; the delivered report verifies" t_ed25519

t_nokey() {
	local n0
	n0=$(rcli "$REDIS_PORT" XLEN mxsend:jobs)
	timed_run 30 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" tlsrpt -c "$NOKEYCONF" --day "$DAY" --timeout 10 rpt-nokey.test
	expect_rc 78
	expect_out '^tlsrpt day=2024-06-01 domain=rpt-nokey\.test rua=mailto:rua@rpt-nokey\.test result=failed why="no DKIM key \(\[tlsrpt\] dkim_key or --dkim-key\): RFC 8460 3 has receivers ignore unsigned reports"$'
	assert_eq "nothing queued" "$n0" "$(rcli "$REDIS_PORT" XLEN mxsend:jobs)"
	assert_eq "nothing claimed" 0 "$(rcli "$REDIS_PORT" HLEN "mxsend:tlsrpt:sent:$DAY:rpt-nokey.test")"
	timed_run 10 "$CASE_DIR/out2" "$CASE_DIR/err2" "$MXSEND" tlsrpt -c "$NOKEYCONF" --day "$DAY" \
		--dkim-key /nonexistent/key.pem --dkim-domain client.test --dkim-selector s rpt-nokey.test
	assert_eq "exit with a missing key file" 78 "$RUN_RC"
	assert_match "the reason" 'DKIM key /nonexistent/key\.pem: No such file' "$(cat "$CASE_DIR/err2")"
	# with the key (CONF), the same report goes
	tlsrpt rpt-nokey.test
	expect_rc 0
	expect_out '^tlsrpt day=2024-06-01 domain=rpt-nokey\.test rua=mailto:rua@rpt-nokey\.test result=queued '
}
run_case "no DKIM key: a mailto: rua fails (exit 78), nothing queued or claimed; a bad key file: exit 78; with a key it goes" t_nokey

# --- 3. https: -----------------------------------------------------------------------
t_https() {
	tlsrpt rpt-https.test
	expect_rc 0 || return 1
	expect_out "^tlsrpt day=2024-06-01 domain=rpt-https\.test rua=https://report\.rpt-https\.test:$NGINX_PORT/v1 result=sent status=204 report_id=[^ ]+$"
	assert_match "nginx saw the POST" '^POST /v1 204 ct="application/tlsrpt\+gzip" len=[0-9]+ host=report\.rpt-https\.test$' \
		"$(cat "$NGX/access.log")"
	local f="" b
	for b in "$NGX"/tmp/body/*; do
		[ -f "$b" ] || continue
		if gzip -dc "$b" 2>/dev/null | grep -q '"rpt-https.test"'; then
			f=$b
			break
		fi
	done
	if [ -z "$f" ]; then
		fail "no gzip body for rpt-https.test kept by nginx"
	else
		gzip -dc "$f" >"$CASE_DIR/post.json"
		expect_report "$CASE_DIR/post.json" rpt-https.test
	fi
	tlsrpt rpt-https.test
	expect_rc 0
	expect_out '^tlsrpt day=2024-06-01 domain=rpt-https\.test rua=https://[^ ]+ result=skipped why="sent [^"]+"$'
	assert_eq "POSTs for rpt-https.test" 1 "$(grep -c '^POST /v1 ' "$NGX/access.log")"
}
run_case "https: rua: POST application/tlsrpt+gzip, 204 accepted; the body is the report; not resent" t_https

t_both() {
	tlsrpt --https-port "$NGINX_PORT" rpt-both.test
	expect_rc 0 || return 1
	expect_out '^tlsrpt day=2024-06-01 domain=rpt-both\.test rua=mailto:rua@rpt-both\.test result=queued job=[^ ]+ report_id=[^ ]+$'
	expect_out '^tlsrpt day=2024-06-01 domain=rpt-both\.test rua=https://report\.rpt-https\.test/v1 result=sent status=204 report_id=[^ ]+$'
	assert_eq "one report id for both" 1 "$(sed -n 's/.* report_id=\([^ ]*\)$/\1/p' "$CASE_DIR/out" | sort -u | wc -l)"
	assert_eq "sent marks" 2 "$(rcli "$REDIS_PORT" HLEN "mxsend:tlsrpt:sent:$DAY:rpt-both.test")"
}
run_case "two rua (mailto + https without a port: --https-port): both sent, one report id" t_both

# --- 4. failures ------------------------------------------------------------------------
t_fail() {
	tlsrpt rpt-fail.test
	expect_rc 75 || return 1
	expect_out "^tlsrpt day=2024-06-01 domain=rpt-fail\.test rua=https://[^ ]+/fail result=failed status=500 why=\"status: HTTP 500[^\"]*\"$"
	assert_eq "claim released" 0 "$(rcli "$REDIS_PORT" HLEN "mxsend:tlsrpt:sent:$DAY:rpt-fail.test")"
	tlsrpt rpt-fail.test
	expect_rc 75
	assert_eq "the next run tries again" 2 "$(grep -c '^POST /fail 500 ' "$NGX/access.log")"
}
run_case "https: rua answering 500: failed, exit 75, claim released, retried next run" t_fail

t_slow() {
	timed_run 30 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" tlsrpt -c "$CONF" --day "$DAY" --timeout 2 rpt-slow.test
	expect_rc 75 || return 1
	expect_out '^tlsrpt day=2024-06-01 domain=rpt-slow\.test rua=https://[^ ]+/slow result=failed why="timeout: timeout after 2000 ms[^"]*"$'
	assert_lt "elapsed ms (--timeout 2)" 4500 "$RUN_MS"
	assert_eq "claim released" 0 "$(rcli "$REDIS_PORT" HLEN "mxsend:tlsrpt:sent:$DAY:rpt-slow.test")"
}
run_case "https: rua that stalls: failed within --timeout, exit 75" t_slow

t_none() {
	tlsrpt rpt-none.test
	expect_rc 0
	expect_out '^tlsrpt day=2024-06-01 domain=rpt-none\.test rua=none result=none why="no TLSRPT record"$'
	tlsrpt nosuch.test
	expect_rc 0
	assert_match "nothing counted" 'no TLS sessions counted on 2024-06-01 for nosuch\.test' "$(cat "$CASE_DIR/err")"
}
run_case "no TLSRPT record, no counters: nothing to send, exit 0" t_none

t_delay_and_off() {
	tlsrpt --delay 1 rpt-mail.test # already sent: skipped after at most 1 s
	expect_rc 0
	expect_out 'result=skipped'
	assert_lt "elapsed ms with --delay 1" 4000 "$RUN_MS"
	timed_run 30 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" tlsrpt -c "$NOCONF" --day "$DAY" rpt-fail.test
	expect_rc 0
	assert_match "tlsrpt = no" 'tlsrpt = no: nothing sent' "$(cat "$CASE_DIR/err")"
	assert_eq "no POST with tlsrpt = no" 2 "$(grep -c '^POST /fail ' "$NGX/access.log")"
}
run_case "--delay bounded; [tls] tlsrpt = no sends nothing" t_delay_and_off

t_async() {
	local t3=$((DAY0 + 2 * 86400 + 3600)) out k
	out=$(tr '|' '\t' <<EOF | "$DRV" qrecord "$REDIS_URL" 2>"$CASE_DIR/drv.err"
rpt-async.test|sts|idA|testing|*.rpt-async.test|600|mx1.rpt-async.test|127.0.47.20|-|-|-|3|$t3
rpt-async.test|sts|idA|testing|*.rpt-async.test|600|mx2.rpt-async.test|127.0.47.21|-|certificate-host-mismatch|hostname mismatch|2|$t3
EOF
	) || fail "driver failed: $out $(tail -n 5 "$CASE_DIR/drv.err")"
	assert_eq "driver" "early=-107 sent=5" "$out" # -ENOTCONN before the connection is up
	rcli "$REDIS_PORT" HGETALL "mxsend:tlsrpt:2024-06-03:rpt-async.test" >"$CASE_DIR/hash"
	k='sts:idA|certificate-host-mismatch|mx2.rpt-async.test|127.0.47.21|'
	assert_eq "successes" 3 "$(grep -A1 -Fx 'ok:sts:idA' "$CASE_DIR/hash" | tail -n 1)"
	assert_eq "failures" 2 "$(grep -A1 -Fx "fail:$k" "$CASE_DIR/hash" | tail -n 1)"
	assert_eq "reason" "hostname mismatch" "$(grep -A1 -Fx "why:$k" "$CASE_DIR/hash" | tail -n 1)"
	assert_ge "hash TTL" 691000 "$(rcli "$REDIS_PORT" TTL "mxsend:tlsrpt:2024-06-03:rpt-async.test")"
	assert_ge "day set TTL" 691000 "$(rcli "$REDIS_PORT" TTL "mxsend:tlsrpt:days:2024-06-03")"
	timed_run 30 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" tlsrpt -c "$CONF" --day 2024-06-03 --dry-run
	expect_rc 0
	expect_out '^tlsrpt day=2024-06-03 domain=rpt-async\.test rua=none result=none why="no TLSRPT record"$'
}
run_case "async path (tlsrpt_queue_event on a running queue): counted whole, TTLs set" t_async

# --- `mxsend send` adds its TLS sessions to the counters (DESIGN "Command line") ----
t_send_counts() {
	local m=$CASE_DIR/m.eml conf=$CASE_DIR/send.ini today i ok0 n
	today=$(date -u +%F)
	integ_config "$conf" "$(printf '[redis]\nurl = %s\n\n[tls]\nsts_https_port = %s\n' "$REDIS_URL" "$NGINX_PORT")"
	printf 'From: a@client.test\nSubject: send\n\nhello\n' >"$m"
	ok0=$(rcli "$REDIS_PORT" HGET "mxsend:tlsrpt:$today:rpt-send.test" ok:sts:send1)
	for i in 1 2; do
		timed_run 20 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" send -c "$conf" --from a@client.test \
			--to "u$i@rpt-send.test" "$m"
		assert_eq "send $i: exit status" 0 "$RUN_RC" || show_run
		expect_out "^u$i@rpt-send\.test delivered 250 .* verified=yes policy=sts-enforce "
	done
	assert_eq "successful sessions counted in Redis" "$((${ok0:-0} + 2))" \
		"$(rcli "$REDIS_PORT" HGET "mxsend:tlsrpt:$today:rpt-send.test" ok:sts:send1)"
	timed_run 30 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" tlsrpt -c "$CONF" --dry-run --day "$today" rpt-send.test
	expect_rc 0 || return 1
	expect_out "^tlsrpt day=$today domain=rpt-send\.test rua=mailto:rua@rpt-send\.test result=dry-run$"
	n=$(python3 - "$CASE_DIR/out" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
doc = json.loads(text[text.index("{"):text.rindex("}") + 1])
p = doc["policies"][0]
print(p["policy"]["policy-type"], p["summary"]["total-successful-session-count"],
      p["summary"]["total-failure-session-count"], "mode: enforce" in p["policy"]["policy-string"])
PY
	) || fail "the dry-run JSON does not parse"
	assert_eq "report: type, successes, failures, enforce" "sts $((${ok0:-0} + 2)) 0 True" "$n"
	# Redis unreachable: delivered all the same, exit 0, a warning
	integ_config "$conf" "$(printf '[redis]\nurl = redis://127.0.0.1:1/0\n\n[tls]\nsts_https_port = %s\n' "$NGINX_PORT")"
	timed_run 20 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" send -c "$conf" --from a@client.test --to u3@rpt-send.test "$m"
	assert_eq "Redis down: exit status" 0 "$RUN_RC" || show_run
	expect_out '^u3@rpt-send\.test delivered 250 '
	assert_match "Redis down: a warning" 'warning: TLSRPT counters not written: .*connect' "$(cat "$CASE_DIR/err")"
	# no [redis] url: nothing counted (and no warning)
	integ_config "$conf" "$(printf '[tls]\nsts_https_port = %s\n' "$NGINX_PORT")"
	timed_run 20 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" send -c "$conf" --from a@client.test --to u4@rpt-send.test "$m"
	assert_eq "no Redis named: exit status" 0 "$RUN_RC" || show_run
	assert_eq "no Redis named: nothing on stderr" "" "$(cat "$CASE_DIR/err")"
	assert_eq "no Redis named: counters unchanged" "$((${ok0:-0} + 2))" \
		"$(rcli "$REDIS_PORT" HGET "mxsend:tlsrpt:$today:rpt-send.test" ok:sts:send1)"
	assert_eq "messages at the MX" 4 "$(sink_count sendmx)"
}
run_case "mxsend send adds its TLS sessions to the TLSRPT counters (STS enforce domain, twice; tlsrpt --dry-run shows them); Redis down: delivered, warning; no [redis] url: not counted" t_send_counts

t_usage() {
	local a
	for a in "--day 2024-02-30" "--day yesterday" "--delay -1" "--delay x" "--timeout 0" "a.test b.test" "--bogus"; do
		# shellcheck disable=SC2086 # word splitting wanted
		timed_run 10 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" tlsrpt -c "$CONF" $a
		assert_eq "exit for '$a'" 64 "$RUN_RC"
	done
}
run_case "usage errors: exit 64" t_usage

integ_finish

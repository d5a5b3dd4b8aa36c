#!/usr/bin/env bash
# t_dkim.sh: DKIM signing of application mail (issue 19 part 1; sender/signer.h,
# sender/dkim.h): [dkim DOMAIN] keys in the config, the From: domain's key (or a
# parent's with subdomains = yes), a job's `dkim` field (`send --dkim`), a
# platform key (dkim_extra), dkim_require. Every signature is checked by an
# independent verifier, Debian's python3-dkim (dkimpy), on the message as the
# sink stored it, with the keys published as TXT records in unbound: RSA and
# Ed25519, relaxed/relaxed and simple/simple, DATA and BDAT (a sink with and
# without CHUNKING), bare-LF input, 8-bit bodies, two signatures. A 100-recipient
# job through `mxsend run` is signed once (every stored copy carries the same
# b=); `mxsend run` signs on its signing threads (sender/sign_pool.h): 150 jobs
# x 3 copies through 3 workers all verify, one signature per job; a job's
# signed copy counts in max_inflight_bytes (mxsend_inflight_bytes); SIGTERM
# while jobs are being signed finishes them. Config errors (bad key file,
# short RSA key) exit 78 naming file:line.
# A real MTA verifies too: Exim 4.96 (make deps; root) logs [verification succeeded].
# Loopback only: unbound 127.0.61.53, sinks 127.0.61.1 (DATA), 127.0.61.2 (BDAT),
# 127.0.61.3 (450 at RCPT), 127.0.61.5 (every reply 100 ms late), Exim 127.0.61.4
# with its TXT server 127.0.61.54:53.
# shellcheck disable=SC2317,SC2031 # case functions run indirectly, each in its run_case subshell
set -u
# shellcheck source=tests/integ/lib.sh
. "$(dirname "$0")/lib.sh"
exec 3>&1 # the figures of a case, shown whatever the verdict

integ_setup mx.dk.test mx.dkc.test mx.dkt.test mx.dkx.test mx.dks.test
integ_require mxsend mxsink unbound unbound-checkconf redis-server redis-cli python3 timeout openssl base64
SYS_PY=/usr/bin/python3 # Debian's dkimpy (python3-dkim, python3-nacl for Ed25519)
"$SYS_PY" -c 'import dkim, nacl, dns.resolver' 2>/dev/null ||
	integ_missing "python3-dkim, python3-nacl, python3-dnspython (make deps)"

P=$SINK_PORT
K=$INTEG_DIR/keys
mkdir -p "$K"
for k in rsa plat; do
	openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$K/$k.pem" 2>/dev/null ||
		integ_missing "openssl genpkey"
done
openssl genpkey -algorithm ED25519 -out "$K/ed.pem" 2>/dev/null || integ_missing "openssl genpkey"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out "$K/r1024.pem" 2>/dev/null ||
	integ_missing "openssl genpkey"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:768 -out "$K/short.pem" 2>/dev/null ||
	integ_missing "openssl genpkey"
printf -- '-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n' >"$K/bad.pem"
rsa_p() { openssl pkey -in "$1" -pubout -outform DER 2>/dev/null | base64 -w0; }
# a TXT record's value in strings of at most 200 characters
txt() { local v=$1 o=""; while [ -n "$v" ]; do o+="\"${v:0:200}\" "; v=${v:200}; done; echo "$o"; }
RSA_P=$(rsa_p "$K/rsa.pem")
PLAT_P=$(rsa_p "$K/plat.pem")
R1024_P=$(rsa_p "$K/r1024.pem")
ED_P=$(openssl pkey -in "$K/ed.pem" -pubout -outform DER 2>/dev/null | tail -c 32 | base64 -w0)

ZONE=$INTEG_DIR/zone.txt
cat >"$ZONE" <<EOF
dk.test. MX 10 mx.dk.test.
mx.dk.test. A 127.0.61.1
dkc.test. MX 10 mx.dkc.test.
mx.dkc.test. A 127.0.61.2
dkt.test. MX 10 mx.dkt.test.
mx.dkt.test. A 127.0.61.3
dkx.test. MX 10 mx.dkx.test.
mx.dkx.test. A 127.0.61.4
dks.test. MX 10 mx.dks.test.
mx.dks.test. A 127.0.61.5
s1._domainkey.rsa.test. TXT $(txt "v=DKIM1; k=rsa; p=$RSA_P")
s2._domainkey.simple.test. TXT $(txt "v=DKIM1; k=rsa; p=$RSA_P")
s3._domainkey.par.test. TXT $(txt "v=DKIM1; k=rsa; p=$R1024_P")
e1._domainkey.ed.test. TXT "v=DKIM1; k=ed25519; p=$ED_P"
p1._domainkey.platform.test. TXT $(txt "v=DKIM1; k=rsa; p=$PLAT_P")
EOF
start_unbound -a 127.0.61.53 "$ZONE" || integ_missing "unbound did not start"
if [ -z "$INTEG_MISSING" ]; then
	start_sink data --listen "127.0.61.1:$P" || integ_missing "mxsink (DATA)"
	start_sink bdat --listen "127.0.61.2:$P" --chunking || integ_missing "mxsink (BDAT)"
	start_sink temp --listen "127.0.61.3:$P" --rcpt 'temp*=450 4.2.0 later' || integ_missing "mxsink (temp)"
	start_sink slow --listen "127.0.61.5:$P" --delay-ms 100 || integ_missing "mxsink (slow)"
fi

KEYS="[dkim rsa.test]
key = $K/rsa.pem
selector = s1

[dkim ed.test]
key = $K/ed.pem
selector = e1

[dkim simple.test]
key = $K/rsa.pem
selector = s2
canon = simple

[dkim par.test]
key = $K/r1024.pem
selector = s3
subdomains = yes

[dkim platform.test]
key = $K/plat.pem
selector = p1
"
CONF=$INTEG_DIR/dkim.ini
integ_config "$CONF" "$KEYS"
# the same keys, the platform one signing every message too, and signing required
CONF2=$INTEG_DIR/dkim2.ini
integ_config "$CONF2" "$KEYS"
sed -i 's/^helo = client.test$/helo = client.test\ndkim_extra = platform.test/' "$CONF2"
CONF3=$INTEG_DIR/dkim3.ini
integ_config "$CONF3" "$KEYS"
sed -i 's/^helo = client.test$/helo = client.test\ndkim_require = yes/' "$CONF3"
SEND_ARGS=(-c "$CONF")
SHOW_RUN_CMD="mxsend send"

# verify FILE: dkimpy checks every DKIM-Signature of FILE (keys from unbound); one
# line per signature, top first: "d=.. s=.. a=.. c=.. ok|FAIL", then "h=..." of the
# first. Exit 1 when any fails or there is none.
verify() {
	"$SYS_PY" - "$1" "$DNS_ADDR" "$DNS_PORT" <<'EOF'
import re, sys
import dkim, dns.resolver
raw = open(sys.argv[1], "rb").read()
res = dns.resolver.Resolver(configure=False)
res.nameservers = [sys.argv[2]]
res.port = int(sys.argv[3])
def txt(name, timeout=5):
    ans = res.resolve(name.decode().rstrip("."), "TXT", lifetime=timeout)
    return b"".join(b"".join(r.strings) for r in ans)
d = dkim.DKIM(raw)
sigs = [v for (k, v) in d.headers if k.lower() == b"dkim-signature"]
bad = not sigs
first_h = ""
for i, v in enumerate(sigs):
    tags = dict(t.split("=", 1) for t in re.sub(r"\s+", "", v.decode()).split(";") if "=" in t)
    try:
        ok = dkim.DKIM(raw).verify(idx=i, dnsfunc=txt)
    except Exception as e:
        ok = False
        print("# %s" % e)
    bad |= not ok
    print("d=%s s=%s a=%s c=%s %s" % (tags.get("d"), tags.get("s"), tags.get("a"), tags.get("c"), "ok" if ok else "FAIL"))
    if i == 0:
        first_h = tags.get("h", "")
print("h=" + first_h)
sys.exit(1 if bad else 0)
EOF
}

# mail FILE FROM [BODY]: an LF message (bare LF on the wire: mxsend makes CRLF)
mail() {
	printf 'From: Someone <%s>\nTo: u@dk.test\nSubject: dkim test\nDate: Mon, 7 Dec 2026 05:00:00 +0000\nMessage-ID: <%s@x.test>\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n%s\n' \
		"$2" "$RANDOM$RANDOM" "${3:-Hello.}" >"$1"
}

# sent_ok RCPT SINK DKIMRESULT: send's line for RCPT ends in dkim=DKIMRESULT,
# the sink has the message, and dkimpy verifies it; its lines in $CASE_DIR/v.
sent_ok() {
	expect_rc 0 || return 1
	expect_line "$1" "delivered 250 .* dkim=$(re_escape "$3")"
	local eml
	eml=$(sink_find_msg "$2" "$1") || fail "sink $2 has no message for $1" || return 1
	verify "$eml" >"$CASE_DIR/v" || fail "dkimpy: $(cat "$CASE_DIR/v")"
	cp "$eml" "$CASE_DIR/got.eml"
}

t_sign() { # KEYDOMAIN SELECTOR ALG CANON SINK DOMAIN
	local m=$CASE_DIR/m.eml rcpt=u-$1-$5@$6
	mail "$m" "news@$1" "$(printf 'Grüße, body  with  blanks \t\n\nzwei Zeilen.\n\n\n')"
	send --from "news@$1" --to "$rcpt" "$m"
	sent_ok "$rcpt" "$5" "d=$1 s=$2" || return 1
	assert_eq "dkimpy" "d=$1 s=$2 a=$3 c=$4 ok" "$(head -n 1 "$CASE_DIR/v")"
	assert_eq "one signature" 1 "$(grep -c '^DKIM-Signature:' "$CASE_DIR/got.eml")"
	# oversigned: from, subject, date, to listed once more than present
	local h
	h=$(sed -n 's/^h=//p' "$CASE_DIR/v")
	for f in from to subject date message-id; do
		assert_eq "$f in h= (signed + oversigned)" 2 "$(tr ':' '\n' <<<"$h" | grep -cx "$f")"
	done
	assert_eq "no bare LF stored" 0 "$(grep -c $'[^\r]$' "$CASE_DIR/got.eml")"
	# a changed byte in the body: dkimpy must say no
	sed 's/zwei/drei/' "$CASE_DIR/got.eml" >"$CASE_DIR/t.eml"
	verify "$CASE_DIR/t.eml" >/dev/null && fail "dkimpy accepted a changed body"
	# a From: added on top: oversigning makes it fail
	{ printf 'From: evil@x.test\r\n'; cat "$CASE_DIR/got.eml"; } >"$CASE_DIR/t2.eml"
	verify "$CASE_DIR/t2.eml" >/dev/null && fail "dkimpy accepted an added From:"
	return 0
}
for s in data:dk.test bdat:dkc.test; do
	run_case "RSA-2048 relaxed/relaxed, ${s%%:*}: 8-bit bare-LF body, dkimpy verifies; oversigned h=; a changed body or an added From: fails" \
		t_sign rsa.test s1 rsa-sha256 relaxed/relaxed "${s%%:*}" "${s#*:}"
	run_case "Ed25519 (RFC 8463) relaxed/relaxed, ${s%%:*}: dkimpy verifies" \
		t_sign ed.test e1 ed25519-sha256 relaxed/relaxed "${s%%:*}" "${s#*:}"
	run_case "RSA simple/simple, ${s%%:*}: 8-bit bare-LF body with trailing blanks, dkimpy verifies" \
		t_sign simple.test s2 rsa-sha256 simple/simple "${s%%:*}" "${s#*:}"
done

t_many() {
	local m=$CASE_DIR/m.eml i h
	{
		printf 'From: news@rsa.test\nSubject: many\n'
		for ((i = 1; i <= 60; i++)); do printf 'To: u%d@dk.test\n' "$i"; done
		printf '\nbody\n'
	} >"$m"
	send --from news@rsa.test --to u-many@dk.test "$m"
	sent_ok u-many@dk.test data "d=rsa.test s=s1" || return 1
	h=$(sed -n 's/^h=//p' "$CASE_DIR/v")
	assert_eq "the last 50 To: signed, no oversigned one (60 present)" 50 "$(tr ':' '\n' <<<"$h" | grep -cx to)"
	assert_eq "from oversigned" 2 "$(tr ':' '\n' <<<"$h" | grep -cx from)"
}
run_case "60 To: fields: the bottom 50 signed (bounded h=), not oversigned; dkimpy verifies" t_many

t_hostile_hdr() {
	local m=$CASE_DIR/m.eml
	{
		printf 'From: news@rsa.test\nSubject: many\n'
		awk 'BEGIN { for (i = 1; i <= 200000; i++) printf "To: u%d@dk.test\n", i }'
		printf '\nbody\n'
	} >"$m"
	send --from news@rsa.test --to u-hostile@dk.test "$m"
	expect_rc 0
	expect_line u-hostile@dk.test "delivered 250 .* dkim=d=rsa\.test s=s1"
	assert_lt "send with a 200,000-field header, signed, in ms" 5000 "$RUN_MS"
	echo "# 200,000 header fields: send took $RUN_MS ms"
}
run_case "hostile header: 200,000 To: fields are signed in linear time (bounded h=)" t_hostile_hdr

t_parent() {
	local m=$CASE_DIR/m.eml
	mail "$m" "a@news.par.test"
	send --from a@news.par.test --to u-par@dk.test "$m"
	sent_ok u-par@dk.test data "d=par.test s=s3" || return 1
	assert_eq "dkimpy" "d=par.test s=s3 a=rsa-sha256 c=relaxed/relaxed ok" "$(head -n 1 "$CASE_DIR/v")"
	# no parent fallback without subdomains = yes: rsa.test's subdomain is unsigned
	mail "$m" "a@news.rsa.test"
	send --from a@news.rsa.test --to u-nopar@dk.test "$m"
	expect_rc 0
	expect_line u-nopar@dk.test "delivered 250 .* dkim=none"
}
run_case "parent-domain fallback: From: news.par.test signed by [dkim par.test] (subdomains = yes, RSA-1024); news.rsa.test unsigned" t_parent

t_two() {
	local m=$CASE_DIR/m.eml
	mail "$m" "news@rsa.test"
	SEND_ARGS=(-c "$CONF2")
	send --from news@rsa.test --to u-two@dkc.test "$m"
	sent_ok u-two@dkc.test bdat "d=rsa.test s=s1; d=platform.test s=p1" || return 1
	assert_eq "both verify (platform outermost)" \
		"d=platform.test s=p1 a=rsa-sha256 c=relaxed/relaxed ok
d=rsa.test s=s1 a=rsa-sha256 c=relaxed/relaxed ok" "$(head -n 2 "$CASE_DIR/v")"
	# From: a domain without key: the platform signs alone
	mail "$m" "news@other.test"
	send --from news@other.test --to u-two2@dk.test "$m"
	sent_ok u-two2@dk.test data "d=platform.test s=p1"
}
run_case "two signatures: the From: domain's key and the platform's (dkim_extra), both verify; a From: without key gets the platform's alone" t_two

t_field() {
	local m=$CASE_DIR/m.eml eml
	mail "$m" "news@rsa.test"
	send --dkim ed.test --from news@rsa.test --to u-f1@dk.test "$m"
	sent_ok u-f1@dk.test data "d=ed.test s=e1" || return 1
	send --dkim no --from news@rsa.test --to u-f2@dk.test "$m"
	expect_rc 0
	expect_line u-f2@dk.test "delivered 250 .* dkim=none"
	eml=$(sink_find_msg data u-f2@dk.test) || fail "no message for u-f2"
	assert_eq "dkim=no: no DKIM-Signature" 0 "$(grep -c '^DKIM-Signature:' "$eml")"
	send --dkim unknown.test --from news@rsa.test --to u-f3@dk.test "$m"
	expect_rc 65
	assert_match "unknown domain named" 'no \[dkim unknown\.test\] key configured' "$(cat "$CASE_DIR/err")"
	SEND_ARGS=(-c "$CONF3")
	mail "$m" "news@other.test"
	send --from news@other.test --to u-f4@dk.test "$m"
	expect_rc 65
	assert_match "dkim_require" 'no key for the From: domain, and dkim_require = yes' "$(cat "$CASE_DIR/err")"
	send --dkim no --from news@rsa.test --to u-f5@dk.test "$m"
	expect_rc 65
	assert_eq "nothing reached the sink" "" "$(sink_find_msg data u-f4@dk.test 1; sink_find_msg data u-f5@dk.test 1)"
}
run_case "send --dkim DOMAIN picks a key; --dkim no: unsigned, none; --dkim unknown.test: exit 65 naming it; dkim_require: unsigned refused" t_field

t_conferr() { # KEYFILE REGEX [EXTRA]
	local c=$CASE_DIR/c.ini m=$CASE_DIR/m.eml
	mail "$m" "news@rsa.test"
	integ_config "$c" "$(printf '[dkim rsa.test]\nselector = s1\nkey = %s\n%s' "$1" "${3:-}")"
	local line
	line=$(grep -n '^key = ' "$c" | cut -d: -f1)
	SEND_ARGS=(-c "$c")
	send --from news@rsa.test --to u-err@dk.test "$m"
	expect_rc 78
	assert_match "error names file:line" "$(re_escape "$c"):$line: .*$2" "$(cat "$CASE_DIR/err")"
	assert_no_match "no key material in the message" 'BEGIN|MII' "$(cat "$CASE_DIR/err")"
}
run_case "config: a file that is no PEM key: exit 78, FILE:LINE of key =" t_conferr "$K/bad.pem" 'not a PEM private key'
run_case "config: an RSA key of 768 bits: exit 78, refused (1024 at least)" t_conferr "$K/short.pem" 'RSA key of 768 bits'
run_case "config: a key file that does not exist: exit 78" t_conferr "$K/none.pem" 'No such file'

t_conferr2() {
	local c=$CASE_DIR/c.ini m=$CASE_DIR/m.eml
	mail "$m" "news@rsa.test"
	integ_config "$c" "$(printf '[dkim rsa.test]\nkey = %s\n' "$K/rsa.pem")"
	SEND_ARGS=(-c "$c")
	send --from news@rsa.test --to u-err@dk.test "$m"
	expect_rc 78
	assert_match "missing selector" 'key and selector are required' "$(cat "$CASE_DIR/err")"
	integ_config "$c" "$(printf '[dkim rsa.test]\nkey = %s\nselector = s1\nheaders = subject:to\n' "$K/rsa.pem")"
	send --from news@rsa.test --to u-err@dk.test "$m"
	expect_rc 78
	assert_match "from not signed" 'headers must include from' "$(cat "$CASE_DIR/err")"
	integ_config "$c" "$(printf '[dkim rsa.test]\nkey = %s\nselector = s1\ncanon = loose\n' "$K/rsa.pem")"
	send --from news@rsa.test --to u-err@dk.test "$m"
	expect_rc 78
	assert_match "bad canon" 'bad value "loose" for canon' "$(cat "$CASE_DIR/err")"
	integ_config "$c" "$(printf '[dkim rsa.test]\nkey = %s\nselector = s1\n' "$K/rsa.pem")"
	sed -i 's/^helo = client.test$/helo = client.test\ndkim_extra = nokey.test/' "$c"
	send --from news@rsa.test --to u-err@dk.test "$m"
	expect_rc 78
	assert_match "dkim_extra without section" 'dkim_extra = nokey.test names no \[dkim nokey.test\] section' "$(cat "$CASE_DIR/err")"
}
run_case "config: missing selector, headers without from, bad canon, dkim_extra naming no section: exit 78" t_conferr2

# --- mxsend run: a 100-recipient job is signed once ------------------------------
t_run() {
	start_redis -n run || return 1
	local p=$REDIS_PORT c=$CASE_DIR/run.ini m=$CASE_DIR/m.eml to="" i
	integ_config "$c" "$(printf '[redis]\nurl = %s\n\n[domain dk.test]\nmax_rcpt = 10\n\n%s' "$REDIS_URL" "$KEYS")"
	mail "$m" "news@rsa.test" "$(printf 'one job, many copies\n.leading dot\n')"
	for ((i = 1; i <= 50; i++)); do to+="r$i@dk.test,r$i@dkc.test,"; done
	rcli "$p" XADD mxsend:jobs '*' from news@rsa.test to "${to%,}" data "$(cat "$m")" id big >/dev/null
	rcli "$p" XADD mxsend:jobs '*' from news@rsa.test to off@dk.test data "$(cat "$m")" id off dkim no >/dev/null
	rcli "$p" XADD mxsend:jobs '*' from news@rsa.test to unk@dk.test data "$(cat "$m")" id unk dkim unknown.test >/dev/null
	rcli "$p" XADD mxsend:jobs '*' from news@rsa.test to bad@dk.test data "$(cat "$m")" id bad dkim 'a b' >/dev/null
	timed_run 30 "$CASE_DIR/run.out" "$CASE_DIR/run.err" "$MXSEND" run -c "$c" --until-empty
	assert_eq "run exit" 0 "$RUN_RC" || tail -n 5 "$CASE_DIR/run.err"
	local r
	r=$(results "$p" id,rcpt,status,dkim,reply)
	assert_eq "100 delivered, signed d=rsa.test s=s1" 100 "$(grep -c '^big|r[0-9]*@dkc\?\.test|delivered|d=rsa\.test s=s1|' <<<"$r")"
	assert_match "dkim=no: none" '^off\|off@dk\.test\|delivered\|none\|' "$r"
	assert_match "unknown domain: rejected, named" '^unk\|unk@dk\.test\|rejected\|none\|dkim: no \[dkim unknown\.test\] key configured$' "$r"
	assert_match "bad dkim value: rejected" '^bad\|bad@dk\.test\|rejected\|none\|bad dkim value' "$r"
	# the copies stored: 5 transactions at dk.test (max_rcpt 10), 1 BDAT at dkc.test
	local f b n=0
	for f in "$(sink_maildir data)"/*.eml "$(sink_maildir bdat)"/*.eml; do
		grep -q '^X-None' "$f" && continue
		grep -q 'one job, many copies' "$f" || continue
		grep -q '^DKIM-Signature:' "$f" || continue
		verify "$f" >"$CASE_DIR/v" || fail "dkimpy, $f: $(cat "$CASE_DIR/v")"
		b+=$(sed -n '/^DKIM-Signature:/,/^[^ \t]/p' "$f" | tr -d ' \t\r\n' | sed 's/.*b=//; s/[A-Z][A-Za-z-]*:.*//')$'\n'
		n=$((n + 1))
	done
	assert_eq "signed copies stored (5 DATA + 1 BDAT)" 6 "$n"
	assert_eq "one signature for all copies (identical b=)" 1 "$(sort -u <<<"${b%$'\n'}" | wc -l)"
}
run_case "run: a 100-recipient job over 2 domains and 6 transactions is signed once (one b= in every copy, all verify); dkim=no none; dkim=unknown.test and a bad value rejected" t_run

t_retry() {
	start_redis -n retry || return 1
	local p=$REDIS_PORT c=$CASE_DIR/run.ini m=$CASE_DIR/m.eml
	integ_config "$c" "$(printf '[redis]\nurl = %s\n\n[retry]\nschedule = 1s\njitter = 0\n\n%s' "$REDIS_URL" "$KEYS")"
	mail "$m" "news@rsa.test"
	rcli "$p" XADD mxsend:jobs '*' from news@rsa.test to temp1@dkt.test data "$(cat "$m")" id rt dkim ed.test >/dev/null
	timed_run 4 "$CASE_DIR/run.out" "$CASE_DIR/run.err" "$MXSEND" run -c "$c"
	local r
	r=$(results "$p" id,status,attempt,dkim)
	assert_match "attempt 1 signed by the job's key" '^rt\|deferred\|1\|d=ed\.test s=e1$' "$r"
	assert_match "attempt 2 (the job put back) still names it" '^rt\|deferred\|2\|d=ed\.test s=e1$' "$r"
}
run_case "retry: the job's dkim field is kept when a deferred job is put back (attempt 2 signed d=ed.test, not the From: domain's key)" t_retry

# --- mxsend run signs on its signing threads (sender/sign_pool.h) ----------------

# verify_all MARK FILE...: dkimpy on every FILE whose X-Job: starts with MARK, in
# one process; a line per file: "JOB B_VALUE ok|FAIL" (B_VALUE: the signature's b=).
verify_all() {
	local mark=$1
	shift
	"$SYS_PY" - "$DNS_ADDR" "$DNS_PORT" "$mark" "$@" <<'EOF'
import re, sys
import dkim, dns.resolver
res = dns.resolver.Resolver(configure=False)
res.nameservers = [sys.argv[1]]
res.port = int(sys.argv[2])
cache = {}
def txt(name, timeout=5):
    if name not in cache:
        ans = res.resolve(name.decode().rstrip("."), "TXT", lifetime=timeout)
        cache[name] = b"".join(b"".join(r.strings) for r in ans)
    return cache[name]
for f in sys.argv[4:]:
    raw = open(f, "rb").read()
    m = re.search(rb"^X-Job: (\S+)", raw, re.M)
    if not m or not m.group(1).decode().startswith(sys.argv[3]):
        continue
    d = dkim.DKIM(raw)
    sigs = [v for (k, v) in d.headers if k.lower() == b"dkim-signature"]
    b = re.sub(rb"\s+", b"", sigs[0]).split(b"b=")[-1].split(b";")[0].decode() if sigs else "-"
    try:
        ok = len(sigs) == 1 and d.verify(dnsfunc=txt)
    except Exception:
        ok = False
    print("%s %s %s" % (m.group(1).decode(), b, "ok" if ok else "FAIL"))
EOF
}

# signed_jobs PORT N PREFIX DOMAINS [PAD [RCPTS]]: pipe_jobs (lib.sh) with a
# From: news@rsa.test header field (rsa.test's key signs them)
signed_jobs() {
	pipe_jobs "$1" "$2" "$4" "$3" "${5:-0}" "${6:-1}" $'From: News <news@rsa.test>\r\n'
}
results_ge() { [ "$(rcli "$1" XLEN mxsend:results)" -ge "$2" ]; } # PORT MIN
# exited_clean RC LOG: `mxsend run` (mx_start, lib.sh) exited 0 and wrote its
# exit accounting, and no sanitizer report (MXSEND=build/asan/mxsend)
exited_clean() {
	assert_eq "exit status" 0 "$1" || tail -n 3 "$2" | sed 's/^/# /'
	grep -q '^mxsend run: elapsed_s=' "$2" || fail "no exit accounting line in $2"
	assert_no_match "no sanitizer report" 'ERROR: AddressSanitizer|runtime error:|LeakSanitizer' "$(cat "$2")"
}

t_run_many() {
	start_redis -n many || return 1
	local p=$REDIS_PORT c=$CASE_DIR/run.ini r v=$CASE_DIR/v
	integ_config "$c" "$(printf '[redis]\nurl = %s\n\n[domain dk.test]\nmax_rcpt = 2\n\n%s' "$REDIS_URL" "$KEYS")"
	sed -i 's/^helo = client.test$/helo = client.test\nworkers = 3\nlog = debug/' "$c"
	signed_jobs "$p" 150 many "dk.test dk.test dk.test dkc.test" 0 4 || fail "could not queue the jobs" || return 1
	timed_run 60 "$CASE_DIR/run.out" "$CASE_DIR/run.err" "$MXSEND" run -c "$c" --until-empty
	assert_eq "run exit" 0 "$RUN_RC" || tail -n 5 "$CASE_DIR/run.err"
	r=$(results "$p" id,status,dkim)
	assert_eq "600 delivered, signed d=rsa.test s=s1" 600 "$(grep -c '^many-[0-9]*|delivered|d=rsa\.test s=s1$' <<<"$r")"
	assert_eq "no other result" 600 "$(wc -l <<<"$r")"
	assert_eq "one signature per job (evt=dkim_signed)" 150 "$(grep -c 'evt=dkim_signed job=' "$CASE_DIR/run.err")"
	# 3 copies per job: 2 transactions at dk.test (max_rcpt 2), 1 BDAT at dkc.test
	verify_all many- "$(sink_maildir data)"/*.eml "$(sink_maildir bdat)"/*.eml >"$v"
	assert_eq "copies stored and checked" 450 "$(wc -l <"$v")"
	assert_eq "dkimpy verifies every copy" 450 "$(grep -c ' ok$' "$v")" || grep -m 3 FAIL "$v" | sed 's/^/# /'
	assert_eq "jobs seen" 150 "$(cut -d' ' -f1 "$v" | sort -u | wc -l)"
	assert_eq "one b= per job (its 3 copies share it)" 150 "$(cut -d' ' -f1,2 "$v" | sort -u | wc -l)"
	assert_eq "150 distinct b= (no job got another's signature)" 150 "$(cut -d' ' -f2 "$v" | sort -u | wc -l)"
}
run_case "run, 3 workers + 3 signing threads: 150 jobs x 4 recipients (3 copies each, DATA and BDAT): 600 delivered, all 450 copies verify, one signature (b=) per job, 150 evt=dkim_signed" t_run_many

# the gauges in flight (a scrape), or fail
gauges_zero() {
	local s
	s=$(scrape "$1") && [ "$(mval "$s" mxsend_inflight_bytes)" = 0 ] && [ "$(mval "$s" mxsend_inflight)" = 0 ]
}

# inflight_case EOL MIN_PCT MAX_PCT MAX_JOBS: 60 signed jobs of ~100 kB whose
# From: line ends in EOL, under a 1 MiB max_inflight_bytes
inflight_case() {
	local eol=$1 lo=$2 hi=$3 mj=$4
	start_redis -n "bytes$lo" || return 1 # a name (and port) of its own per case
	local p=$REDIS_PORT c=$CASE_DIR/run.ini mport s i jobs bytes raw pct maxj=0 maxb=0 minr=999 maxr=0 n=0
	mport=$(integ_port) || return 1
	integ_config "$c" "$(printf '[redis]\nurl = %s\n\n%s' "$REDIS_URL" "$KEYS")"
	sed -i "s/^helo = client.test\$/helo = client.test\\nworkers = 2\\nmax_inflight_bytes = 1048576\\nmetrics = 127.0.0.1:$mport/" "$c"
	pipe_jobs "$p" 60 dks.test bytes 100000 1 "From: News <news@rsa.test>$eol" ||
		fail "could not queue the jobs" || return 1
	# a job's bytes as the queue counts them: its fields
	raw=$(rcli "$p" --raw EVAL "local e = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1][2]
		local n = 0 for _, v in ipairs(e) do n = n + #v end return n" 1 mxsend:jobs)
	mx_start run "$c" || fail "mxsend run did not start" || return 1
	# the gauges (refreshed every 500 ms) while the 60 jobs pass, 60 s at most
	for ((i = 0; i < 300; i++)); do
		if s=$(scrape "$mport" 2>/dev/null); then
			jobs=$(mval "$s" mxsend_inflight) bytes=$(mval "$s" mxsend_inflight_bytes)
			if [ -n "$jobs" ] && [ -n "$bytes" ] && [ "$jobs" -gt 0 ]; then
				echo "$jobs $bytes" >>"$CASE_DIR/samples"
				n=$((n + 1))
				[ "$jobs" -gt "$maxj" ] && maxj=$jobs
				[ "$bytes" -gt "$maxb" ] && maxb=$bytes
				pct=$((bytes * 100 / jobs / raw)) # per job, % of the job's own bytes
				[ "$pct" -lt "$minr" ] && minr=$pct
				[ "$pct" -gt "$maxr" ] && maxr=$pct
			fi
		fi
		results_ge "$p" 60 && break
		sleep 0.2
	done
	diag "job $raw bytes, cap 1048576; samples (jobs bytes): $(uniq "$CASE_DIR/samples" | tr '\n' ',' | head -c 400)" >&3
	assert_eq "60 delivered, signed" 60 "$(results "$p" status,dkim | grep -c '^delivered|d=rsa\.test s=s1$')"
	assert_ge "samples with jobs in flight" 3 "$n"
	assert_ge "bytes per job in flight, % of the job: at least $lo" "$lo" "$minr"
	assert_lt "bytes per job in flight, % of the job: at most $hi" "$((hi + 1))" "$maxr"
	# no claim before the previous one's jobs are handed over and what their
	# signing holds is reserved (queue_suppress.c supp_out): the cap holds
	# from the first claim on, give or take one job
	assert_lt "at most $mj jobs in flight under the 1 MiB cap" "$((mj + 1))" "$maxj"
	assert_lt "at most the cap + one job and its copy counted" $((1048576 + 2 * raw + 1)) "$maxb"
	wait_until 5 gauges_zero "$mport" || fail "not given back: $(scrape "$mport" | grep '^mxsend_inflight')"
	exited_clean "$(mx_stop run TERM 10)" "$CASE_DIR/run/log"
}
# CRLF throughout: the signatures go in front of the job's own bytes (no
# copy): a job counts its size and its signatures
t_inflight_bytes() { inflight_case $'\r\n' 100 102 11; }
run_case "run: signing copies no message already in wire form (mxsend_inflight_bytes ~1 x the job per job), bounded under a 1 MiB cap, all given back once done" t_inflight_bytes
# a bare LF: the normalised copy is what is signed and sent, and counts
t_inflight_bytes_lf() { inflight_case $'\n' 195 203 6; }
run_case "run: a bare-LF job's normalised copy counts in max_inflight_bytes (~2 x the job per job), bounded under a 1 MiB cap, all given back once done" t_inflight_bytes_lf

t_term_signing() {
	start_redis -n term || return 1
	local p=$REDIS_PORT c=$CASE_DIR/run.ini log=$CASE_DIR/run/log after left pend del
	integ_config "$c" "$(printf '[redis]\nurl = %s\n\n%s' "$REDIS_URL" "$KEYS")"
	sed -i 's/^helo = client.test$/helo = client.test\nworkers = 2\nlog = debug\ndkim_extra = platform.test/' "$c"
	signed_jobs "$p" 2000 term "dk.test" || fail "could not queue the jobs" || return 1
	mx_start run "$c" || fail "mxsend run did not start" || return 1
	wait_until 20 results_ge "$p" 1 || fail "no result within 20 s" || return 1
	exited_clean "$(mx_stop run TERM 30)" "$log"
	grep -q 'evt=stopping why=SIGTERM' "$log" || fail "no evt=stopping why=SIGTERM"
	assert_no_match "no shutdown timeout" 'evt=shutdown_timeout' "$(cat "$log")"
	# signed after the stop began: those were with the signing threads then
	after=$(sed -n '/evt=stopping/,$p' "$log" | grep -c 'evt=dkim_signed')
	echo "# $after jobs signed after SIGTERM, of $(grep -c 'evt=dkim_signed' "$log")"
	assert_ge "jobs being signed at SIGTERM" 1 "$after"
	del=$(results "$p" status,dkim | grep -c '^delivered|d=rsa\.test s=s1; d=platform\.test s=p1$')
	# not claimed, or claimed on the wire when the stop began (put back at once)
	left=$(($(rcli "$p" XLEN mxsend:jobs) + $(rcli "$p" ZCARD mxsend:jobs:retry)))
	pend=$(rcli "$p" XPENDING mxsend:jobs mxsend | head -n 1)
	assert_eq "every result delivered, signed twice (none deferred)" "$del" "$(rcli "$p" XLEN mxsend:results)"
	assert_eq "delivered + still queued = all" 2000 "$((del + left))"
	assert_eq "nothing left pending in the group" 0 "$pend"
	assert_eq "one signing per delivered job" "$del" "$(grep -c 'evt=dkim_signed' "$log")"
}
run_case "run: SIGTERM while jobs are with the signing threads: they are signed and delivered, exit clean, nothing pending or lost" t_term_signing

t_term_twice() {
	start_redis -n term2 || return 1
	local p=$REDIS_PORT c=$CASE_DIR/run.ini log=$CASE_DIR/run/log left pend del
	integ_config "$c" "$(printf '[redis]\nurl = %s\n\n%s' "$REDIS_URL" "$KEYS")"
	sed -i 's/^helo = client.test$/helo = client.test\nworkers = 1\nlog = info\ndkim_extra = platform.test/' "$c"
	# one signing thread, two signatures per job (~0.5 ms): thousands claimed
	# at once take seconds to sign, more than the second between the signals
	signed_jobs "$p" 10000 term2 "dk.test" 4000 || fail "could not queue the jobs" || return 1
	mx_start run "$c" || fail "mxsend run did not start" || return 1
	wait_until 20 results_ge "$p" 1 || fail "no result within 20 s" || return 1
	sleep 0.3
	kill -TERM "$MX_PID"
	sleep 1.2
	# a second signal: no waiting for deliveries (nor signatures)
	exited_clean "$(mx_stop run TERM 20)" "$log"
	grep -q 'evt=releasing' "$log" || fail "no evt=releasing"
	grep 'evt=signing_abandoned' "$log" | sed 's/^/# /'
	del=$(results "$p" id,status | grep -c '|delivered$')
	left=$(($(rcli "$p" XLEN mxsend:jobs) + $(rcli "$p" ZCARD mxsend:jobs:retry)))
	pend=$(rcli "$p" XPENDING mxsend:jobs mxsend | head -n 1)
	echo "# delivered $del, put back or not claimed $left"
	assert_eq "delivered once each" "$del" "$(results "$p" id,status | grep '|delivered$' | sort -u | wc -l)"
	assert_eq "delivered + put back + not claimed = all" 10000 "$((del + left))"
	assert_eq "nothing left pending in the group" 0 "$pend"
}
run_case "run: SIGTERM twice while jobs are with the signing threads: the jobs still there are put back (committed as they stood), nothing pending or lost" t_term_twice

# --- a real receiving MTA verifying: Exim 4.96 (Debian 12's, unpacked by make deps) ---
# Exim looks DKIM keys up through libc's resolver: it runs in a private mount
# namespace whose /etc/resolv.conf names 127.0.61.54, where a small dnspython
# server (port 53, UDP, these TXT records only) answers. Ed25519 and RSA-1024
# keys: their records fit a 512-byte UDP answer.
EXIM=${INTEROP_ROOT:-/var/cache/mxsend/interop}/usr/sbin/exim4
EX_DIR=$INTEG_DIR/exim
ex_start() {
	[ -x "$EXIM" ] && [ "$(id -u)" = 0 ] || return 2
	mkdir -p "$EX_DIR/spool" "$EX_DIR/log" || return 1
	chmod 755 "$INTEG_DIR" "$EX_DIR"
	chown -R nobody "$EX_DIR/spool" "$EX_DIR/log" || return 1
	printf 'nameserver 127.0.61.54\noptions timeout:1 attempts:1\n' >"$EX_DIR/resolv.conf"
	cat >"$EX_DIR/txt.py" <<EOF
import socket, dns.message, dns.rrset, dns.rdatatype, dns.rcode
recs = {"e1._domainkey.ed.test.": ['v=DKIM1; k=ed25519; p=$ED_P'],
        "s3._domainkey.par.test.": ['v=DKIM1; k=rsa; p=${R1024_P:0:200}', '${R1024_P:200}']}
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.61.54", 53))
while True:
    data, peer = s.recvfrom(4096)
    try:
        q = dns.message.from_wire(data)
    except Exception:
        continue
    r = dns.message.make_response(q)
    name = str(q.question[0].name).lower()
    if q.question[0].rdtype == dns.rdatatype.TXT and name in recs:
        txt = " ".join('"%s"' % v for v in recs[name])
        r.answer.append(dns.rrset.from_text(name, 60, "IN", "TXT", txt))
    elif name not in recs:
        r.set_rcode(dns.rcode.NXDOMAIN)
    s.sendto(r.to_wire(), peer)
EOF
	integ_spawn extxt "$EX_DIR/txt.log" "$SYS_PY" "$EX_DIR/txt.py" || return 1
	cat >"$EX_DIR/exim.conf" <<EOF
primary_hostname = mx.dkx.test
spool_directory = $EX_DIR/spool
log_file_path = $EX_DIR/log/%slog
log_selector = +dkim_verbose
exim_user = nobody
exim_group = nogroup
keep_environment =
daemon_smtp_ports = $P
local_interfaces = 127.0.61.4
host_lookup =
rfc1413_hosts =
queue_only = true
domainlist local_domains = dkx.test
chunking_advertise_hosts = *
tls_advertise_hosts =
acl_smtp_rcpt = acl_rcpt
begin acl
acl_rcpt:
  accept  domains = +local_domains
  deny    message = 5.7.1 relay not permitted
begin routers
begin transports
EOF
	# shellcheck disable=SC2016 # expanded by the namespace's bash
	integ_spawn exim "$EX_DIR/daemon.log" unshare -m --propagation private bash -c '
		mount --bind "$1/resolv.conf" /etc/resolv.conf || exit 1
		exec "$2" -C "$1/exim.conf" -bdf' _ "$EX_DIR" "$EXIM" || return 1
	wait_listen "$SPAWN_PID" "127.0.61.4:$P"
}

t_exim() {
	local m=$CASE_DIR/m.eml rc=0 i
	ex_start || rc=$?
	[ "$rc" = 2 ] && { echo "# skipped: $EXIM (make deps) or root missing"; return 0; }
	[ "$rc" = 0 ] || fail "Exim did not start: $(tail -n 5 "$EX_DIR/daemon.log" "$EX_DIR/log/paniclog" 2>/dev/null)" || return 1
	mail "$m" "news@ed.test" "$(printf 'Gr\xc3\xbc\xc3\x9fe\n.dot\n')"
	send --from news@ed.test --to u-ed@dkx.test "$m"
	expect_line u-ed@dkx.test "delivered 250 .* dkim=d=ed\.test s=e1"
	mail "$m" "a@news.par.test"
	send --from a@news.par.test --to u-par@dkx.test "$m"
	expect_line u-par@dkx.test "delivered 250 .* dkim=d=par\.test s=s3"
	for ((i = 0; i < 30; i++)); do
		[ "$(grep -c 'DKIM: d=' "$EX_DIR/log/mainlog" 2>/dev/null)" -ge 2 ] && break
		sleep 0.1
	done
	grep 'DKIM' "$EX_DIR/log/mainlog" | sed 's/^/# exim: /'
	assert_match "Exim verified the Ed25519 signature" 'DKIM: d=ed\.test s=e1 c=relaxed/relaxed a=ed25519-sha256 .*\[verification succeeded\]' "$(cat "$EX_DIR/log/mainlog")"
	assert_match "Exim logged the verified domains on arrival" "DKIM=par\\.test" "$(cat "$EX_DIR/log/mainlog")"
	assert_match "Exim verified the RSA signature" 'DKIM: d=par\.test s=s3 c=relaxed/relaxed a=rsa-sha256 b=1024 .*\[verification succeeded\]' "$(cat "$EX_DIR/log/mainlog")"
}
run_case "a real MTA verifies: Exim 4.96 logs [verification succeeded] for Ed25519 and RSA signatures (BDAT)" t_exim

integ_finish

#!/usr/bin/env bash
# tests/integ/t_dane.sh: DANE for SMTP (RFC 7672) against a real validating
# resolver (tests/integ/dnssec.sh): test. signed per run with ldns-signzone,
# served by an authority-only unbound, validated by a second unbound whose trust
# anchor is the run's DS; insec.test. is an unsigned delegation; bogus names
# have their RRSIG corrupted. MX hosts are mxsink processes on 127.0.78.x.
# shellcheck disable=SC2317,SC2031 # case functions run indirectly, each in its run_case subshell
set -u
# shellcheck source=tests/integ/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=tests/integ/dnssec.sh
. "$INTEG_LIB_DIR/dnssec.sh"

integ_setup mx1.test
integ_require mxsend mxsink unbound unbound-checkconf ldns-keygen ldns-signzone dig perl openssl

SIGNED=$INTEG_DIR/signed.txt
cat >"$SIGNED" <<'EOF2'
sec.test. 300 IN A 127.0.78.1
bog.test. 300 IN A 127.0.78.2
EOF2
INSECURE='h.insec.test. 300 IN A 127.0.78.3'
BOGUS='bog.test. A'

if [ -z "$INTEG_MISSING" ] && ! dnssec_start "$SIGNED" "$INSECURE" "$BOGUS"; then
	integ_missing "the DNSSEC set-up (tests/integ/dnssec.sh)"
fi

# The fixture itself: secure, insecure and bogus answers as a DANE sender sees them.
t_dnssec_fixture() {
	assert_eq "sec.test A" secure "$(dnssec_status sec.test A)"
	assert_eq "h.insec.test A (unsigned delegation)" insecure "$(dnssec_status h.insec.test A)"
	assert_eq "bog.test A (broken RRSIG)" bogus "$(dnssec_status bog.test A)"
	assert_eq "nx.test A (signed denial)" secure "$(dnssec_status nx.test A)"
	assert_match "sec.test answer" '^sec\.test\..*IN[[:space:]]+A[[:space:]]+127\.0\.78\.1' \
		"$(dnssec_dig sec.test A)"
}
run_case "dnssec fixture: secure (AD), insecure delegation (no AD), bogus (SERVFAIL)" t_dnssec_fixture

integ_finish

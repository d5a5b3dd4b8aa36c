# shellcheck shell=bash
# tests/integ/dnssec.sh: a signed test zone behind a real validating resolver,
# for DANE (RFC 7672) tests. Sourced after lib.sh (never run).
#
#   dnssec_start SIGNED INSECURE [BOGUS] [VALIDATOR_OPTS]
#
# builds, on loopback, the set-up a DANE sender really meets:
#   authority A  unbound with auth-zone "test.", the zone signed by ldns-signzone
#                with a key made per run (ldns-keygen, ECDSA P-256);
#   authority B  unbound with auth-zone "insec.test.", unsigned, delegated from
#                test. without a DS: an insecure delegation;
#   validator    unbound "validator iterator" with the run's DS for test. as its
#                trust anchor, stub zones to A and B (DNS / DNS_ADDR / DNS_PORT
#                point at it, as start_unbound's do).
# SIGNED: records of test. (absolute names, file or text, one per line; SOA, NS
# and the delegation of insec.test. are added). INSECURE: records of insec.test.
# BOGUS: "NAME TYPE" lines whose RRSIG is corrupted after signing (the validator
# answers SERVFAIL: bogus). VALIDATOR_OPTS: unbound server: lines for the
# validator (e.g. 'local-zone: "_25._tcp.mx9.test." deny' for a timeout).
# Names outside test. are refused; nothing leaves the machine.
# Returns 1 (reason on stderr) when a piece fails; DNSSEC_DIR keeps the files.
# Also: dnssec_dig, dnssec_status (what the validator says of a name), tlsa_spki
# (the record data for a certificate).

DNSSEC_DIR=""

# dnssec_server DIR ADDR PORT: the server: clause every unbound here shares.
dnssec_server() {
	printf '%s\n' "server:" "	interface: $2@$3" "	port: $3" "	do-ip4: yes" "	do-ip6: no" \
		"	num-threads: 1" "	do-daemonize: no" '	username: ""' '	chroot: ""' \
		"	directory: \"$1\"" "	pidfile: \"$1/unbound.pid\"" "	logfile: \"$1/unbound.log\"" \
		"	use-syslog: no" "	verbosity: 1" "	access-control: 127.0.0.0/8 allow"
}

# dnssec_auth NAME ADDR ZONE FILE: an authority-only unbound serving FILE as ZONE.
dnssec_auth() {
	local name=$1 addr=$2 zone=$3 file=$4 dir port
	dir=$INTEG_DIR/unbound.$name
	mkdir -p "$dir"
	port=$(integ_port) || return 1
	cat >"$dir/unbound.conf" <<EOF
$(dnssec_server "$dir" "$addr" "$port")
	module-config: "iterator"
	local-zone: "." refuse
	local-zone: "$zone" transparent
auth-zone:
	name: "$zone"
	zonefile: "$file"
	for-downstream: yes
	for-upstream: no
	fallback-enabled: no
EOF
	dnssec_spawn "$name" "$dir" "$addr" "$port" "$zone" SOA || return 1
	echo "$addr@$port"
}

# dnssec_spawn NAME DIR ADDR PORT QNAME QTYPE: start unbound -c DIR/unbound.conf,
# wait (5 s) until it answers QNAME QTYPE.
dnssec_spawn() {
	local name=$1 dir=$2 addr=$3 port=$4 i pid
	if ! unbound-checkconf "$dir/unbound.conf" >"$dir/checkconf.log" 2>&1; then
		echo "dnssec: bad unbound config for $name:" >&2
		cat "$dir/checkconf.log" >&2
		return 1
	fi
	integ_spawn "unbound.$name" "$dir/stderr.log" unbound -d -c "$dir/unbound.conf"
	pid=$SPAWN_PID
	for ((i = 0; i < 25; i++)); do
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "dnssec: unbound $name exited:" >&2
			tail -n 20 "$dir/stderr.log" "$dir/unbound.log" >&2 2>/dev/null
			return 1
		fi
		perl "$DNSQ" "$addr" "$port" "$5" "$6" 0.2 >/dev/null 2>&1 && return 0
	done
	echo "dnssec: unbound $name: no answer within 5 s" >&2
	return 1
}

dnssec_start() {
	[ "$INTEG_LIST" = 1 ] && return 0
	local signed=$1 insecure=$2 bogus=${3:-} vopts=${4:-} d key a b line n t
	d=$INTEG_DIR/dnssec
	DNSSEC_DIR=$d
	mkdir -p "$d"
	[ -r "$signed" ] && [ -f "$signed" ] && signed=$(<"$signed")
	[ -r "$insecure" ] && [ -f "$insecure" ] && insecure=$(<"$insecure")
	{
		echo '$TTL 300'
		echo 'test. 300 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60'
		echo 'test. 300 IN NS ns.test.'
		echo 'ns.test. 300 IN A 127.0.77.54'
		echo 'insec.test. 300 IN NS ns.insec.test.'
		echo 'ns.insec.test. 300 IN A 127.0.77.55'
		printf '%s\n' "$signed"
	} >"$d/test.zone"
	{
		echo '$TTL 300'
		echo 'insec.test. 300 IN SOA ns.insec.test. hostmaster.test. 1 3600 600 86400 60'
		echo 'insec.test. 300 IN NS ns.insec.test.'
		echo 'ns.insec.test. 300 IN A 127.0.77.55'
		printf '%s\n' "$insecure"
	} >"$d/insec.zone"
	# one key (KSK flag, signs everything): enough for a test zone
	key=$(cd "$d" && ldns-keygen -a ECDSAP256SHA256 -k test. 2>"$d/keygen.log") || {
		echo "dnssec: ldns-keygen failed: $(cat "$d/keygen.log")" >&2
		return 1
	}
	if ! (cd "$d" && ldns-signzone -f test.zone.signed test.zone "$key") >"$d/sign.log" 2>&1; then
		echo "dnssec: ldns-signzone failed: $(cat "$d/sign.log")" >&2
		return 1
	fi
	# bogus: flip the first characters of the signature of NAME's TYPE RRSIG
	while IFS= read -r line; do
		[ -z "$line" ] && continue
		n=${line%% *}
		t=${line##* }
		perl -i -pe 'BEGIN { ($n, $t) = (lc shift, uc shift); $n .= "." unless $n =~ /\.$/ }
			my @f = split /\s+/;
			if (lc $f[0] eq $n && $f[3] eq "RRSIG" && uc $f[4] eq $t) {
				s/(\S{8})(\s*)$/ my $s = $1; $s =~ tr{A-Za-z0-9}{B-Za-z0-9A}; "$s$2" /e;
			}' "$n" "$t" "$d/test.zone.signed"
	done <<<"$bogus"
	a=$(dnssec_auth auth-test 127.0.77.54 test. "$d/test.zone.signed") || return 1
	b=$(dnssec_auth auth-insec 127.0.77.55 insec.test. "$d/insec.zone") || return 1
	# the trust anchor: the DS ldns-keygen wrote beside the key
	cp "$d/$key.ds" "$d/anchor.ds"
	local dir=$INTEG_DIR/unbound.validator port
	mkdir -p "$dir"
	port=$(integ_port) || return 1
	cat >"$dir/unbound.conf" <<EOF
$(dnssec_server "$dir" 127.0.77.53 "$port")
	val-log-level: 2
	do-not-query-localhost: no
	module-config: "validator iterator"
	trust-anchor-file: "$d/anchor.ds"
	auto-trust-anchor-file: ""
	local-zone: "." refuse
	local-zone: "test." transparent
	unknown-server-time-limit: 50
	infra-host-ttl: 1
	outbound-msg-retry: 1
	val-bogus-ttl: 1
$(printf '%s\n' "$vopts" | sed -n 's/^[[:space:]]*\([a-z-]*:\)/\t\1/p')
stub-zone:
	name: "test."
	stub-addr: $a
stub-zone:
	name: "insec.test."
	stub-addr: $b
EOF
	dnssec_spawn validator "$dir" 127.0.77.53 "$port" test. SOA || return 1
	DNS_ADDR=127.0.77.53
	DNS_PORT=$port
	DNS=127.0.77.53:$port
}

# tlsa_spki CERT: the data of a DANE-EE(3) SPKI(1) SHA2-256(1) TLSA record for the key
# of certificate file CERT: "3 1 1 HEX".
tlsa_spki() {
	echo "3 1 1 $(openssl x509 -in "$1" -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum | cut -c1-64)"
}

# dnssec_dig NAME TYPE: dig +dnssec +adflag at the validator; prints the
# status and flags line and the answer (for assertions on the AD bit).
dnssec_dig() {
	dig +dnssec +adflag +time=3 +tries=1 -p "$DNS_PORT" @"$DNS_ADDR" "$1" "$2" 2>&1
}

# dnssec_status NAME TYPE: "secure" (NOERROR, AD), "insecure" (NOERROR or
# NXDOMAIN without AD), "bogus" (SERVFAIL) or "error: ..." for anything else.
dnssec_status() {
	local out hdr flags
	out=$(dnssec_dig "$1" "$2")
	hdr=$(grep -m1 -- '->>HEADER<<-' <<<"$out")
	flags=$(grep -m1 '^;; flags:' <<<"$out")
	case $hdr in
	*'status: SERVFAIL'*) echo bogus ;;
	*'status: NOERROR'* | *'status: NXDOMAIN'*)
		if [[ $flags == *' ad'* ]]; then echo secure; else echo insecure; fi ;;
	*) echo "error: ${hdr:-no answer}" ;;
	esac
}

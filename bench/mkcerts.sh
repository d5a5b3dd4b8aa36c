#!/bin/sh
# bench/mkcerts.sh DIR [NAME...]: a throwaway ECDSA P-256 PKI for mxsink and the tests.
#
# Writes into DIR (created if missing), replacing what is there, so running it again is safe:
#   ca.pem ca.key                  self-signed test CA, valid 10 days
#   server.pem server.key          leaf signed by the CA; SANs = each NAME, *.test, localhost
#   wrong.pem wrong.key            leaf signed by the CA; SAN only wrong.invalid
#   expired.pem expired.key        leaf signed by the CA, SANs as server, notAfter in the past
#   selfsigned.pem selfsigned.key  self-signed, SANs as server (not trusted through ca.pem)
# A NAME that looks like an IPv4/IPv6 address becomes an IP SAN, anything else a DNS SAN.
# Leaf files hold the leaf only: clients trust ca.pem.  Quiet unless a step fails.
set -eu

if [ $# -lt 1 ]; then
	echo "usage: $0 DIR [NAME...]" >&2
	exit 64
fi
dir=$1
shift
mkdir -p "$dir"
cd "$dir"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# run CMD...: run quietly; on failure show what it said and stop.
run() {
	if ! "$@" >"$tmp/log" 2>&1; then
		echo "mkcerts: failed: $*" >&2
		cat "$tmp/log" >&2
		exit 1
	fi
}

san=""
for n in "$@"; do
	if printf '%s' "$n" | grep -Eq '^([0-9]{1,3}\.){3}[0-9]{1,3}$|:'; then
		san="${san}IP:$n,"
	else
		san="${san}DNS:$n,"
	fi
done
san="${san}DNS:*.test,DNS:localhost"
cn=${1:-localhost}

# One config for everything: no dependency on the system openssl.cnf.
cat >"$tmp/cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
CN = placeholder
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = $san
[wrong]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:wrong.invalid
[self]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
subjectAltName = $san
[ca]
default_ca = tca
[tca]
database = $tmp/index.txt
new_certs_dir = $tmp
serial = $tmp/serial
default_md = sha256
policy = anything
unique_subject = no
email_in_dn = no
copy_extensions = none
[anything]
commonName = supplied
EOF
: >"$tmp/index.txt"
echo 01 >"$tmp/serial"

key() {
	run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/$1.key"
}

# leaf NAME CN EXTSECTION: key + CSR + certificate signed by the CA.
leaf() {
	key "$1"
	run openssl req -new -config "$tmp/cnf" -key "$tmp/$1.key" -subj "/CN=$2" -out "$tmp/$1.csr"
	run openssl x509 -req -in "$tmp/$1.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" \
		-set_serial "0x$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" -days 10 -sha256 \
		-extfile "$tmp/cnf" -extensions "$3" -out "$tmp/$1.pem"
}

key ca
run openssl req -new -x509 -config "$tmp/cnf" -key "$tmp/ca.key" -subj "/CN=mxsend throwaway test CA" \
	-days 10 -sha256 -extensions ca_ext -out "$tmp/ca.pem"

leaf server "$cn" leaf
leaf wrong wrong.invalid wrong

# Expired: signed by the CA with a validity window that ended yesterday. x509 -req in
# OpenSSL 3.0 cannot set dates, `openssl ca` can.
key expired
run openssl req -new -config "$tmp/cnf" -key "$tmp/expired.key" -subj "/CN=$cn" -out "$tmp/expired.csr"
start=$(date -u -d '-3 days' +%Y%m%d%H%M%SZ)
end=$(date -u -d '-1 day' +%Y%m%d%H%M%SZ)
run openssl ca -batch -config "$tmp/cnf" -notext -cert "$tmp/ca.pem" -keyfile "$tmp/ca.key" \
	-startdate "$start" -enddate "$end" -extfile "$tmp/cnf" -extensions leaf \
	-in "$tmp/expired.csr" -out "$tmp/expired.pem"

key selfsigned
run openssl req -new -x509 -config "$tmp/cnf" -key "$tmp/selfsigned.key" -subj "/CN=$cn" \
	-days 10 -sha256 -extensions self -out "$tmp/selfsigned.pem"

# Install the finished set at once, keys private.
for f in ca server wrong expired selfsigned; do
	chmod 600 "$tmp/$f.key"
	mv -f "$tmp/$f.key" "$f.key"
	mv -f "$tmp/$f.pem" "$f.pem"
done

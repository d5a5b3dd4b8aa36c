# shellcheck shell=bash
# tests/integ/interop.sh: private Exim and OpenSMTPD instances for tests/integ/t_interop.sh
# and t_dane_mta.sh (sourced after lib.sh, never run).
#
# Debian 12's exim4-daemon-light (4.96, TLS by GnuTLS 3.7) and opensmtpd (6.8.0p2) cannot be
# installed beside postfix (all three provide mail-transport-agent), so `make deps` unpacks
# them into $INTEROP_ROOT (dpkg -x) and creates the system users they look up at start
# (Debian-exim, opensmtpd, opensmtpq). Each instance lives in the work directory and
# listens on port $P (the caller's) of the addresses it is given, with the run's
# certificate ($CERTS/server.pem); nothing outside the work directory changes.
#
#   ex_start "ADDR..." "DOMAIN..." [MAIN [ACLS]]   Exim (exim4 -C exim.conf -bdf): queue_only,
#        so nothing is delivered or sent on (ex_copy reads the stored copy back);
#        RCPT nobody@ gets 550 5.1.1, later@ 451 4.2.0; MAIN: more main-section
#        lines (e.g. per-address chunking_advertise_hosts); ACLS: more ACLs (named
#        by MAIN, e.g. acl_smtp_mail = acl_mail). Log: $EXLOG.
#   ex_copy RCPT                            Exim's copy of this case's message for RCPT
#   sm_start "ADDR..." "DOMAIN..." LISTEN... OpenSMTPD (smtpd -d) in a private mount
#        namespace; LISTEN: smtpd.conf "listen on" lines (pki "server" is the run's
#        certificate); nobody@DOMAIN rejected, the rest written to mail/LOCAL by an
#        mda. Log: $SMLOG.
#   sm_copy LOCAL                           OpenSMTPD's copy for LOCAL@
# Every wait is bounded (listeners 5 s, copies 5-10 s).

INTEROP_ROOT=${INTEROP_ROOT:-/var/cache/mxsend/interop}
EXIM=$INTEROP_ROOT/usr/sbin/exim4
SMTPD=$INTEROP_ROOT/usr/sbin/smtpd
EX_DIR=""   # Exim's instance directory (ex_start)
SM_DIR=""   # OpenSMTPD's (sm_start)
EXLOG=""    # Exim's main log
SMLOG=""    # OpenSMTPD's log (its stderr)

# interop_require: record with integ_missing what the instances need and is not here.
interop_require() {
	integ_require unshare mount
	[ -x "$EXIM" ] || integ_missing "$EXIM (make deps unpacks exim4-daemon-light there)"
	[ -x "$SMTPD" ] || integ_missing "$SMTPD (make deps unpacks opensmtpd there)"
	[ "$(id -u)" = 0 ] || integ_missing "root (the MTAs drop privileges; OpenSMTPD needs a mount namespace)"
}

# ex_start "ADDR..." "DOMAIN..." [MAIN [ACLS]]: write Exim's config and start the daemon (foreground,
# registered for clean-up). Exim's own processes run as nobody: the work directory is
# opened to them. Its name is mx.exim.test.
ex_start() {
	local addrs domains main=${3:-} acls=${4:-} a lsn=() w
	read -ra w <<<"$1"
	addrs=${w[*]} # one space between words
	read -ra w <<<"$2"
	domains=${w[*]}
	EX_DIR=$INTEG_DIR/exim
	EXLOG=$EX_DIR/log/mainlog
	for a in $addrs; do
		lsn+=("$a:$P")
	done
	mkdir -p "$EX_DIR/spool" "$EX_DIR/log" || return 1
	cp "$CERTS/server.pem" "$CERTS/server.key" "$EX_DIR/" || return 1
	chmod 755 "$INTEG_DIR" "$EX_DIR"
	chown -R nobody "$EX_DIR/spool" "$EX_DIR/log" "$EX_DIR/server.key" || return 1
	cat >"$EX_DIR/exim.conf" <<EOF
# a private Exim (exim4 -C $EX_DIR/exim.conf), written by tests/integ/interop.sh
primary_hostname = mx.exim.test
spool_directory = $EX_DIR/spool
log_file_path = $EX_DIR/log/%slog
log_selector = +received_recipients +tls_resumption +smtp_connection +incoming_interface
exim_user = nobody
exim_group = nogroup
keep_environment =
daemon_smtp_ports = $P
local_interfaces = <; ${addrs// / ; }
host_lookup =
rfc1413_hosts =
queue_only = true
message_size_limit = 50M
domainlist local_domains = ${domains// / : }
pipelining_advertise_hosts = *
smtputf8_advertise_hosts = *
tls_advertise_hosts = *
tls_certificate = $EX_DIR/server.pem
tls_privatekey = $EX_DIR/server.key
tls_resumption_hosts = *
acl_smtp_rcpt = acl_rcpt
$main

begin acl
acl_rcpt:
  deny    local_parts = nobody
          message = 5.1.1 no such user here
  defer   local_parts = later
          message = 4.2.0 mailbox busy, try later
  accept  domains = +local_domains
  deny    message = 5.7.1 relay not permitted
$acls

begin routers
begin transports
EOF
	integ_spawn exim "$EX_DIR/daemon.log" "$EXIM" -C "$EX_DIR/exim.conf" -bdf || return 1
	wait_listen "$SPAWN_PID" "${lsn[@]}" || {
		echo "ex_start: Exim is not listening:" >&2
		tail -n 20 "$EX_DIR/daemon.log" "$EX_DIR/log/paniclog" >&2 2>/dev/null
		return 1
	}
}

# sm_start "ADDR..." "DOMAIN..." LISTEN...: OpenSMTPD's config, the namespace's files, and the
# daemon (smtpd -d: foreground, log on stderr). Its compiled-in paths (/var/spool/smtpd,
# /var/lib/opensmtpd/empty, /var/run, /usr/libexec/opensmtpd) and its two users (opensmtpd,
# opensmtpq: /etc/passwd and /etc/group copies, with ids no system user has) are bind mounts
# of work-directory files. ADDR...: where LISTEN's lines listen (waited for).
sm_start() {
	local addrs=$1 domains=$2 a d lsn=()
	shift 2
	SM_DIR=$INTEG_DIR/smtpd
	SMLOG=$SM_DIR/daemon.log
	for a in $addrs; do
		lsn+=("$a:$P")
	done
	mkdir -p "$SM_DIR/var/spool/smtpd" "$SM_DIR/var/lib/opensmtpd/empty" "$SM_DIR/run" \
		"$SM_DIR/mail" || return 1
	chmod 711 "$SM_DIR/var/spool/smtpd"
	chmod 755 "$INTEG_DIR" "$SM_DIR"
	chmod 777 "$SM_DIR/mail" # the mda runs as nobody
	cp "$CERTS/server.pem" "$CERTS/server.key" "$SM_DIR/" || return 1
	{ cat /etc/passwd; printf 'opensmtpd:x:64990:64990::/nonexistent:/usr/sbin/nologin\n'
	  printf 'opensmtpq:x:64991:64991::/nonexistent:/usr/sbin/nologin\n'; } >"$SM_DIR/passwd"
	{ cat /etc/group; printf 'opensmtpd:x:64990:\nopensmtpq:x:64991:\n'; } >"$SM_DIR/group"
	local m=$SM_DIR/mail
	{
		printf '# a private OpenSMTPD (smtpd -f %s/smtpd.conf), written by tests/integ/interop.sh\n' "$SM_DIR"
		printf 'pki server cert "%s/server.pem"\npki server key "%s/server.key"\n' "$SM_DIR" "$SM_DIR"
		printf '%s\n' "$@"
		printf 'action "keep" mda "cat >%s/.%%{rcpt.user} && mv %s/.%%{rcpt.user} %s/%%{rcpt.user}" virtual { "@" = nobody } user nobody\n' \
			"$m" "$m" "$m"
		for d in $domains; do
			printf 'match from any for rcpt-to "nobody@%s" reject\n' "$d"
			printf 'match from any for domain "%s" action "keep"\n' "$d"
		done
	} >"$SM_DIR/smtpd.conf"
	# shellcheck disable=SC2016 # expanded by the namespace's bash
	integ_spawn smtpd "$SMLOG" unshare -m --propagation private bash -c '
		d=$1 r=$2
		mount --bind "$d/var/spool" /var/spool && mount --bind "$d/var/lib" /var/lib &&
		mount --bind "$d/run" /var/run && mount --bind "$r/usr/libexec" /usr/libexec &&
		mount --bind "$d/passwd" /etc/passwd && mount --bind "$d/group" /etc/group || exit 1
		exec "$r/usr/sbin/smtpd" -d -f "$d/smtpd.conf"' _ "$SM_DIR" "$INTEROP_ROOT" || return 1
	wait_listen "$SPAWN_PID" "${lsn[@]}" || {
		echo "sm_start: OpenSMTPD is not listening:" >&2
		tail -n 20 "$SMLOG" >&2 2>/dev/null
		return 1
	}
}

# ex_copy RCPT: Exim's stored copy of the message received for RCPT in this case
# (exim -Mvc of the id its "<=" line names) into $CASE_DIR/copy; 5 s at most.
ex_copy() {
	local id i
	for ((i = 0; i < 50; i++)); do
		id=$(case_log "$EXLOG" | awk -v r="$1" '$4 == "<=" && $0 ~ (" for .*" r) { print $3 }' | tail -n 1)
		[ -n "$id" ] && break
		sleep 0.1
	done
	[ -n "$id" ] || { fail "Exim logged no message for $1" "$(case_log "$EXLOG" | tail -n 5)"; return 1; }
	"$EXIM" -C "$EX_DIR/exim.conf" -Mvc "$id" >"$CASE_DIR/copy" 2>"$CASE_DIR/copy.err" ||
		{ fail "exim -Mvc $id" "$(cat "$CASE_DIR/copy.err")"; return 1; }
}

# sm_copy LOCAL: OpenSMTPD's copy for LOCAL@ (mail/LOCAL, written by the mda after
# the queue runs) into $CASE_DIR/copy; 10 s at most.
sm_copy() {
	local i
	for ((i = 0; i < 100; i++)); do
		[ -f "$SM_DIR/mail/$1" ] && break
		sleep 0.1
	done
	cp "$SM_DIR/mail/$1" "$CASE_DIR/copy" 2>/dev/null ||
		{ fail "OpenSMTPD delivered nothing to mail/$1" "$(tail -n 5 "$SMLOG")"; return 1; }
}

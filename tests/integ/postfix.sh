# shellcheck shell=bash
# tests/integ/postfix.sh: a private Postfix instance for tests/integ/t_mta.sh and
# bench/postfix.sh (sourced after lib.sh, never run).
#
# The postfix package comes from `make deps` (debconf 'No configuration': no
# main.cf, no system instance). An instance lives in one directory, $PF_DIR:
#   etc/   main.cf, master.cf and the caller's maps     (postfix -c $PF_DIR/etc)
#   spool/ the queue (queue_directory)                  data/ data_directory
#   log/   maillog (maillog_file, through postlogd), check.log, start.log
# It listens only where pf_listen says (127.0.9.x in this project), never on
# port 25 of 0.0.0.0, has no local delivery and no system aliases.
#
#   pf_require                    a missing postfix fails every case (integ_missing)
#   pf_init DIR HOSTNAME          directories, main.cf and master.cf basics
#   cat >>"$PF_DIR/etc/main.cf"   the caller's own settings (later lines win)
#   pf_receiver DIR HOSTNAME "DOMAIN..." "LOCAL..."
#                                 pf_init, then a receiving MTA: virtual(8) stores
#                                 mail for LOCAL@DOMAIN in Maildir $PF_MAIL/DOMAIN/LOCAL/,
#                                 STARTTLS with the run's certificate, nothing sent on
#   pf_maildir_files DOMAIN LOCAL N  the message files stored for LOCAL@DOMAIN (N expected)
#   pf_sessions / pf_wait_sessions N  the case's finished SMTP sessions (maillog)
#   pf_listen ADDR:PORT [-o K=V]  an smtpd listener (master.cf)
#   pf_start [CGROUP_DIR]         postfix check + start; the master is registered
#                                 with lib.sh's clean-up (SIGTERM at exit)
#   pf_stop                       postfix stop, bounded; leftovers killed by pid
#   pf / pfconf ARG...            postfix / postconf -c on the instance
#   pf_install LOG / pf_purge     bench/postfix.sh run without make deps: install
#                                 the package for one run and purge it after
# Every wait is bounded (postfix start/stop under timeout, listeners 5 s).

PF_DIR=""       # the instance directory
PF_MAIL=""      # pf_receiver's virtual_mailbox_base
PF_MASTER=""    # pid of the running master process
PF_LISTEN=()    # ADDR:PORT of each smtpd listener (pf_start waits for them)
PF_INSTALLED=0  # 1: pf_install installed the package (pf_purge removes it)

pf() { postfix -c "$PF_DIR/etc" "$@"; }
pfconf() { postconf -c "$PF_DIR/etc" "$@"; }

# pf_require: record "postfix not installed" with integ_missing unless the
# commands an instance needs are there.
pf_require() {
	local c
	for c in postfix postconf postmap; do
		if ! command -v "$c" >/dev/null 2>&1; then
			integ_missing "postfix is not installed (command $c; make deps installs it)"
			return 1
		fi
	done
	[ "$(id -u)" = 0 ] || { integ_missing "postfix instance needs root (master drops privileges)"; return 1; }
}

# pf_install LOG: apt-get install postfix, non-interactively with debconf's
# 'No configuration', unless postfix and smtp-source are already there; sets
# PF_INSTALLED=1 when it installed the package.
pf_install() {
	command -v postfix >/dev/null && command -v smtp-source >/dev/null && return 0
	echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
	if ! DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y --no-install-recommends postfix \
		>"$1" 2>&1; then
		tail -n 5 "$1" >&2
		return 1
	fi
	PF_INSTALLED=1
	command -v smtp-source >/dev/null
}

# pf_purge: apt-get purge postfix if pf_install installed it.
pf_purge() {
	[ "$PF_INSTALLED" = 1 ] || return 0
	DEBIAN_FRONTEND=noninteractive timeout 300 apt-get purge -y postfix >/dev/null 2>&1 || return 1
	PF_INSTALLED=0
}

# pf_init DIR HOSTNAME: create the instance in DIR (sets PF_DIR): the
# directories, a main.cf with the basics (queue and data in DIR, myhostname,
# IPv4 loopback only, no local delivery, no aliases or address rewriting,
# logging to DIR/log/maillog through postlogd) and a master.cf with the
# daemons but no listener (no chroot: it would need copies of /etc files).
# The work directory is opened to other users: Postfix's daemons run as postfix.
pf_init() {
	PF_DIR=$1
	PF_LISTEN=()
	mkdir -p "$PF_DIR/etc" "$PF_DIR/spool" "$PF_DIR/data" "$PF_DIR/log" || return 1
	chmod 755 "$INTEG_DIR" "$PF_DIR" "$PF_DIR/etc" "$PF_DIR/spool" "$PF_DIR/log"
	chown postfix "$PF_DIR/data" || return 1
	cat >"$PF_DIR/etc/main.cf" <<EOF
# a private Postfix instance (postfix -c $PF_DIR/etc), written by tests/integ/postfix.sh
compatibility_level = 3.6
queue_directory = $PF_DIR/spool
data_directory = $PF_DIR/data
mail_owner = postfix
setgid_group = postdrop
myhostname = $2
mydomain = ${2#*.}
myorigin = \$myhostname
append_dot_mydomain = no
# only master.cf's listeners (pf_listen) accept connections; inet_interfaces must
# name an interface address, which 127.0.9.x is not (127.0.0.0/8 is routed to lo)
inet_interfaces = loopback-only
inet_protocols = ipv4
mydestination =
local_recipient_maps =
local_transport = error:local delivery is disabled
alias_maps =
alias_database =
relay_domains =
smtpd_peername_lookup = no
biff = no
# no address rewriting surprises
masquerade_domains =
canonical_maps =
virtual_alias_maps =
recipient_delimiter =
maillog_file = $PF_DIR/log/maillog
maillog_file_prefixes = $PF_DIR/log
EOF
	cat >"$PF_DIR/etc/master.cf" <<EOF
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
tlsproxy  unix  -       -       n       -       0       tlsproxy
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
}

# pf_receiver DIR HOSTNAME "DOMAIN..." "LOCAL...": pf_init DIR HOSTNAME, then the settings
# of a receiving MTA: each LOCAL@DOMAIN is a virtual(8) mailbox, the Maildir
# $PF_MAIL/DOMAIN/LOCAL/ (others: 550 at RCPT), owned by nobody; no relaying, nothing
# sent out (no bounce, no DNS); no header rewriting (the stored copy is what was sent);
# STARTTLS (may) with the run's certificate, "(using TLS...)" in Received:, TLS logged.
# The caller adds its own main.cf lines, its listeners, and starts it.
pf_receiver() {
	local dom loc doms
	pf_init "$1" "$2" || return 1
	PF_MAIL=$PF_DIR/mail
	mkdir -p "$PF_MAIL"
	chown "$(id -u nobody):$(id -g nobody)" "$PF_MAIL" || return 1
	# virtual(8) takes no regexp substitutions: one line per mailbox
	for dom in $3; do
		for loc in $4; do
			printf '%s@%s %s/%s/\n' "$loc" "$dom" "$dom" "$loc"
		done
	done >"$PF_DIR/etc/vmailbox"
	read -ra doms <<<"$3"
	cat >>"$PF_DIR/etc/main.cf" <<EOF
# tests/integ/postfix.sh: a receiving MTA (pf_receiver)
virtual_mailbox_domains = ${doms[*]}
virtual_mailbox_base = $PF_MAIL
virtual_mailbox_maps = texthash:$PF_DIR/etc/vmailbox
virtual_uid_maps = static:$(id -u nobody)
virtual_gid_maps = static:$(id -g nobody)
smtpd_relay_restrictions = reject_unauth_destination
# nothing leaves (no bounce goes out, no DNS is asked)
default_transport = error:this test instance sends nothing out
relay_transport = error:this test instance sends nothing out
# no header rewriting or added headers: the Maildir copy is what was sent
local_header_rewrite_clients =
in_flow_delay = 0
smtpd_tls_security_level = may
smtpd_tls_chain_files = $CERTS/server.key, $CERTS/server.pem
smtpd_tls_received_header = yes
smtpd_tls_loglevel = 1
EOF
}

# pf_maildir_files DOMAIN LOCAL N: print the message files in Maildir DOMAIN/LOCAL
# once there are N (virtual(8) writes them after the 250; 10 s at most); 1 unless
# there are exactly N.
pf_maildir_files() {
	local d=$PF_MAIL/$1/$2/new i n=0
	for ((i = 0; i < 100; i++)); do
		n=$(find "$d" -type f 2>/dev/null | wc -l)
		[ "$n" -ge "$3" ] && break
		sleep 0.1
	done
	find "$d" -type f 2>/dev/null | sort
	[ "$n" -eq "$3" ]
}

# pf_sessions: the "disconnect" lines (one per SMTP session, with its command counts)
# of the instance's maillog since the case's log_mark of it (lib.sh), but
# pf_start's probes (no command).
pf_sessions() {
	case_log "$PF_DIR/log/maillog" | grep -E ': disconnect from ' | grep -v ' commands=0/0$'
}
# pf_wait_sessions N: until there are N sessions (postlogd writes asynchronously;
# 5 s at most).
pf_wait_sessions() {
	local i
	for ((i = 0; i < 50; i++)); do
		[ "$(pf_sessions | grep -c .)" -ge "$1" ] && return 0
		sleep 0.1
	done
	return 1
}

# pf_listen ADDR:PORT [-o NAME=VALUE ...]: an smtpd listener on ADDR:PORT
# (master.cf), with per-listener main.cf overrides.
pf_listen() {
	local l=$1
	shift
	printf '%s inet n - n - - smtpd' "$l" >>"$PF_DIR/etc/master.cf"
	[ $# -gt 0 ] && printf ' %s' "$@" >>"$PF_DIR/etc/master.cf"
	printf '\n' >>"$PF_DIR/etc/master.cf"
	PF_LISTEN+=("$l")
}

# pf_start [CGROUP_DIR]: postfix check (creates the queue directories), then
# postfix start (inside the cgroup CGROUP_DIR when given: the master's children
# inherit it). Registers the master with lib.sh's clean-up (it sends SIGTERM to
# its process group) and waits (5 s each) until every listener accepts.
# Returns 1 with the reason on stderr.
pf_start() {
	local cg=${1:-}
	if ! timeout 60 postfix -c "$PF_DIR/etc" check >"$PF_DIR/log/check.log" 2>&1; then
		echo "pf_start: postfix check failed:" >&2
		cat "$PF_DIR/log/check.log" >&2
		return 1
	fi
	if [ -n "$cg" ]; then
		# shellcheck disable=SC2016 # $BASHPID is the subshell's own pid, expanded by bash -c
		timeout 60 bash -c 'echo "$BASHPID" >"$1/cgroup.procs" && exec postfix -c "$2" start' _ \
			"$cg" "$PF_DIR/etc" >"$PF_DIR/log/start.log" 2>&1
	else
		timeout 60 postfix -c "$PF_DIR/etc" start >"$PF_DIR/log/start.log" 2>&1
	fi || {
		echo "pf_start: postfix start failed:" >&2
		cat "$PF_DIR/log/start.log" >&2
		tail -n 20 "$PF_DIR/log/maillog" >&2 2>/dev/null
		return 1
	}
	read -r PF_MASTER _ <"$PF_DIR/spool/pid/master.pid" 2>/dev/null
	if ! [[ ${PF_MASTER:-} =~ ^[0-9]+$ ]]; then
		echo "pf_start: no pid in $PF_DIR/spool/pid/master.pid" >&2
		PF_MASTER=""
		return 1
	fi
	echo "$PF_MASTER postfix" >>"$INTEG_DIR/procs"
	if ! wait_listen "$PF_MASTER" "${PF_LISTEN[@]}"; then
		echo "pf_start: Postfix is not listening on all of ${PF_LISTEN[*]} (master $PF_MASTER):" >&2
		tail -n 20 "$PF_DIR/log/maillog" >&2 2>/dev/null
		return 1
	fi
}

# pf_stop: postfix stop (it waits 5 s for the master, then kills its process
# group), then SIGTERM/SIGKILL, by pid, to anything left in the master's
# session (the master is a session leader: its pid is the session id).
pf_stop() {
	local i left
	[ -n "$PF_MASTER" ] || return 0
	timeout -k 2 15 postfix -c "$PF_DIR/etc" stop >>"$PF_DIR/log/start.log" 2>&1
	stop_proc postfix TERM
	for ((i = 0; i < 30; i++)); do
		left=$(ps -o pid= -s "$PF_MASTER" 2>/dev/null)
		[ -z "$left" ] && break
		# shellcheck disable=SC2086 # one pid per word
		[ "$i" = 10 ] && kill -TERM $left 2>/dev/null
		sleep 0.1
	done
	# shellcheck disable=SC2086
	[ -n "$left" ] && kill -KILL $left 2>/dev/null
	echo "$PF_MASTER -" >>"$INTEG_DIR/procs" # tombstone: already stopped
	PF_MASTER=""
}

#!/usr/bin/perl
# dnsq.pl: a tiny DNS client for the integration harness (dig may be absent).
# Usage: dnsq.pl SERVER PORT NAME [TYPE] [TIMEOUT_S]
#   TYPE: A, MX, TXT, AAAA (default A). Sends one UDP query, waits at most
#   TIMEOUT_S seconds (default 2), prints one line:
#     rcode=NOERROR|NXDOMAIN|SERVFAIL|REFUSED|... ancount=N [answer ...]
#   where each answer is "A:1.2.3.4", "MX:10:mx1.test." or "TYPE<n>".
# Exit: 0 on a reply (whatever its rcode), 1 on timeout or error.
use strict;
use warnings;
use IO::Socket::INET;
use IO::Select;

my ($server, $port, $name, $type, $wait) = @ARGV;
die "usage: dnsq.pl SERVER PORT NAME [TYPE] [TIMEOUT_S]\n" unless defined $name;
$type //= 'A';
$wait //= 2;
my %types = (A => 1, NS => 2, CNAME => 5, SOA => 6, MX => 15, TXT => 16, AAAA => 28);
my $qtype = $types{uc $type} // die "unknown type $type\n";
my @rcodes = qw(NOERROR FORMERR SERVFAIL NXDOMAIN NOTIMP REFUSED);

my $id = int(rand(65536));
my $q = pack('n n n n n n', $id, 0x0100, 1, 0, 0, 0);
$name =~ s/\.$//;
$q .= pack('C/a*', $_) for split /\./, $name;
$q .= pack('C n n', 0, $qtype, 1);

my $sock = IO::Socket::INET->new(Proto => 'udp', PeerAddr => $server, PeerPort => $port)
	or die "socket: $!\n";
$sock->send($q) or die "send: $!\n";
my $sel = IO::Select->new($sock);
my $buf;
while (1) {
	$sel->can_read($wait) or do { print "timeout\n"; exit 1 };
	defined $sock->recv($buf, 65535) or do { print "error: $!\n"; exit 1 };
	last if length($buf) >= 12 && unpack('n', $buf) == $id;
}

# Read a possibly compressed name at offset; returns (name, offset after it).
sub rdname {
	my ($p) = @_;
	my ($out, $end, $hops) = ('', undef, 0);
	while (1) {
		my $len = unpack('C', substr($buf, $p, 1));
		if (($len & 0xc0) == 0xc0) {
			$end //= $p + 2;
			$p = unpack('n', substr($buf, $p, 2)) & 0x3fff;
			return ('?', $end) if ++$hops > 64;
			next;
		}
		if ($len == 0) { $end //= $p + 1; last }
		$out .= substr($buf, $p + 1, $len) . '.';
		$p += 1 + $len;
	}
	return ($out eq '' ? '.' : $out, $end);
}

my ($rid, $flags, $qd, $an) = unpack('n n n n', $buf);
my $rc = $flags & 0xf;
my @out = ("rcode=" . ($rcodes[$rc] // "RCODE$rc"), "ancount=$an");
my $p = 12;
for (1 .. $qd) { (undef, $p) = rdname($p); $p += 4 }
for (1 .. $an) {
	(undef, $p) = rdname($p);
	my ($t, $c, $ttl, $rdlen) = unpack('n n N n', substr($buf, $p, 10));
	$p += 10;
	if ($t == 1) {
		push @out, 'A:' . join('.', unpack('C4', substr($buf, $p, 4)));
	} elsif ($t == 15) {
		my $pref = unpack('n', substr($buf, $p, 2));
		my ($host) = rdname($p + 2);
		push @out, "MX:$pref:$host";
	} else {
		push @out, "TYPE$t";
	}
	$p += $rdlen;
}
print join(' ', @out), "\n";
exit 0;

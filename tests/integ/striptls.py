#!/usr/bin/env python3
"""tests/integ/striptls.py LISTEN_ADDR:PORT UPSTREAM_ADDR:PORT: a man in the middle
that strips STARTTLS between an SMTP client and a real server (RFC 7672 section 1.3's
downgrade), for tests/integ/t_dane_mta.sh.

Each connection accepted on LISTEN is relayed to UPSTREAM, byte for byte, but:
  server -> client  the STARTTLS line of the EHLO reply is removed (a final
                    "250 STARTTLS" makes the line before it the last one);
  client -> server  a STARTTLS command is not passed on: the relay answers
                    454 4.7.0 itself (as a stripping middlebox does).
One line per event on stdout (flushed): "connect N", "strip N <line>",
"refuse-starttls N", "client N <command>" (each command up to the first MAIL:
its verb and first argument), "close N". Loopback only; every socket has a 30 s
timeout; SIGTERM ends it.
"""
import signal
import socket
import sys
import threading

lock = threading.Lock()


def log(*words):
    with lock:
        print(" ".join(str(w) for w in words), flush=True)


def addr(s):
    host, port = s.rsplit(":", 1)
    if not host.startswith("127."):
        sys.exit("striptls: loopback addresses only: " + s)
    return host, int(port)


def server_to_client(n, up, down, wlock):
    buf, reply = b"", []
    while True:
        data = up.recv(65536)
        if not data:
            break
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            reply.append(line + b"\n")
            if line[3:4] == b"-":
                continue  # more lines of this reply follow
            kept = []
            for ln in reply:
                if ln[4:].strip().upper() == b"STARTTLS" and ln[:3] == b"250":
                    log("strip", n, ln.decode("latin-1").strip())
                    continue
                kept.append(ln)
            if kept and kept[-1][3:4] == b"-":  # the final line was STARTTLS
                kept[-1] = kept[-1][:3] + b" " + kept[-1][4:]
            reply = []
            with wlock:
                down.sendall(b"".join(kept))


def client_to_server(n, down, up, wlock):
    # commands are read line by line up to the first MAIL; from there on (message
    # data, BDAT chunks) every byte is passed on as is
    buf, passthrough = b"", False
    while True:
        data = down.recv(65536)
        if not data:
            break
        if passthrough:
            up.sendall(data)
            continue
        buf += data
        out = b""
        while b"\n" in buf and not passthrough:
            line, buf = buf.split(b"\n", 1)
            words = line.strip().split(b" ", 2)
            verb = words[0].upper() if words and words[0] else b""
            if verb == b"STARTTLS":
                log("refuse-starttls", n)
                with wlock:
                    down.sendall(b"454 4.7.0 TLS not available\r\n")
                continue
            log("client", n, b" ".join(words[:2]).decode("latin-1"))
            out += line + b"\n"
            passthrough = verb == b"MAIL"
        if passthrough:
            out, buf = out + buf, b""
        if out:
            up.sendall(out)


def relay(n, down, upstream):
    try:
        up = socket.create_connection(upstream, timeout=30)
    except OSError as e:
        log("upstream-error", n, e)
        down.close()
        return
    log("connect", n)
    wlock = threading.Lock()
    t = threading.Thread(target=pump, args=(server_to_client, n, up, down, wlock), daemon=True)
    t.start()
    pump(client_to_server, n, down, up, wlock)
    t.join(30)
    log("close", n)


def pump(fn, n, a, b, wlock):
    try:
        fn(n, a, b, wlock)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: striptls.py LISTEN_ADDR:PORT UPSTREAM_ADDR:PORT")
    listen, upstream = addr(sys.argv[1]), addr(sys.argv[2])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(listen)
    ls.listen(16)
    log("listening", "%s:%d" % listen)
    n = 0
    while True:
        down, _ = ls.accept()
        down.settimeout(30)
        n += 1
        threading.Thread(target=relay, args=(n, down, upstream), daemon=True).start()


if __name__ == "__main__":
    main()

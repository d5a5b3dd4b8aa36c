#!/usr/bin/env python3
"""tests/integ/cluster_keys.py MONITOR_FILE SLOT [CLIENT_PREFIX]

Reads what `redis-cli MONITOR` printed while mxsend ran against a Redis
Cluster node and checks the Redis Cluster rules for its key layout
(t_cluster.sh, README "Redis keys"):
  - every key any command touches hashes to SLOT (the queue's hash tag), so
    no command, MULTI block or script spans slots;
  - every key a script's command touches ("[N lua]" lines) was declared in
    the KEYS of the EVAL/EVALSHA it belongs to (the line before them): no key
    name is built inside Lua.
Lines of clients whose address does not start with CLIENT_PREFIX (the test's
own redis-cli) are skipped. Key positions come from the table below; a
command not in it is an error (the table must know every command mxsend
sends). Prints a summary line, then one line per violation; exit 1 on any.
"""
import re
import sys

TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"')
ESC = {"n": "\n", "r": "\r", "t": "\t", "a": "\a", "b": "\b", '"': '"', "\\": "\\"}


def unquote(s):
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            n = s[i + 1]
            if n == "x" and i + 3 < len(s):
                out.append(chr(int(s[i + 2:i + 4], 16)))
                i += 4
                continue
            out.append(ESC.get(n, n))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def crc16(data):
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def key_slot(key):
    b = key.encode("latin-1")
    s = b.find(b"{")
    if s >= 0:
        e = b.find(b"}", s + 1)
        if e > s + 1:
            b = b[s + 1:e]
    return crc16(b) % 16384


NO_KEYS = {"MULTI", "EXEC", "DISCARD", "PING", "CLIENT", "SCRIPT", "AUTH", "SELECT", "CLUSTER",
           "INFO", "CONFIG", "COMMAND", "SCAN", "TIME", "HELLO", "ROLE", "READONLY", "WAIT",
           "ECHO", "QUIT", "DBSIZE"}
FIRST = {"XPENDING", "XADD", "HSET", "HGET", "HDEL", "HMGET", "HGETALL", "HSETNX", "HINCRBY",
         "HLEN", "HSCAN", "HKEYS", "HEXISTS", "ZADD", "ZREM", "ZSCORE", "ZRANGEBYSCORE", "ZRANGE",
         "ZCARD", "XACK", "XDEL", "XCLAIM", "XAUTOCLAIM", "XLEN", "XRANGE", "XREVRANGE", "XTRIM",
         "SADD", "SMEMBERS", "SREM", "SCARD", "EXPIRE", "PEXPIRE", "GET", "SET", "TYPE", "TTL",
         "PTTL", "INCR", "INCRBY", "HINCRBYFLOAT"}
MULTI_KEY = {"DEL", "UNLINK", "EXISTS", "MGET", "TOUCH"}


def keys_of(args):
    """The keys a command touches, or None for a command the table lacks."""
    cmd = args[0].upper()
    if cmd in NO_KEYS:
        return []
    if cmd in FIRST:
        return args[1:2]
    if cmd in MULTI_KEY:
        return args[1:]
    if cmd in ("XINFO", "XGROUP"):
        sub = args[1].upper() if len(args) > 1 else ""
        return args[2:3] if sub not in ("HELP",) else []
    if cmd in ("EVAL", "EVALSHA"):
        n = int(args[2])
        return args[3:3 + n]
    if cmd in ("XREADGROUP", "XREAD"):
        up = [a.upper() for a in args]
        i = up.index("STREAMS") + 1
        rest = args[i:]
        return rest[:len(rest) // 2]
    return None


def main():
    path, slot = sys.argv[1], int(sys.argv[2])
    prefix = sys.argv[3] if len(sys.argv) > 3 else ""
    errors, n_cmd, n_lua, keys_seen, declared = [], 0, 0, set(), None
    line_re = re.compile(r'^\d+\.\d+ \[(\d+) ([^\]]*)\] (.*)$')
    with open(path, encoding="latin-1") as f:
        for raw in f:
            m = line_re.match(raw.rstrip("\n"))
            if not m:
                continue
            who, rest = m.group(2), m.group(3)
            lua = who == "lua"
            if not lua and not who.startswith(prefix):
                declared = None
                continue
            args = [unquote(t) for t in TOKEN.findall(rest)]
            if not args:
                continue
            keys = keys_of(args)
            if keys is None:
                errors.append("command not in the checker's table: %s" % args[0])
                continue
            if lua:
                n_lua += 1
                if declared is None:
                    errors.append("script command outside a script: %s" % " ".join(args[:3]))
                else:
                    for k in keys:
                        if k not in declared:
                            errors.append("undeclared key %r in %s (declared: %s)"
                                          % (k, args[0], ", ".join(sorted(declared))[:300]))
            else:
                n_cmd += 1
                declared = set(keys) if args[0].upper() in ("EVAL", "EVALSHA") else None
            for k in keys:
                keys_seen.add(k)
                if key_slot(k) != slot:
                    errors.append("key %r in slot %d, not %d (%s)" % (k, key_slot(k), slot, args[0]))
    print("%d commands, %d script commands, %d distinct keys, slot %d" %
          (n_cmd, n_lua, len(keys_seen), slot))
    seen = set()
    for e in errors:
        if e not in seen:
            seen.add(e)
            print(e)
        if len(seen) >= 30:
            break
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The Python server and client of the chaos soak (tests/soak/soak.py).

Same protocol, options and output lines as tests/programs/c/soak_peer.c (see soak_proto.h there):

    soak_peer.py server --name NAME --port-file PATH [--port P] [--nofile N]
    soak_peer.py client --target NAME=HOST:PORT ... --conns N [--threads T] [--seed S]
                        [--max-bytes B] [--max-hold-ms H] [--hang-s S] [--nofile N]

A target named "redis" is spoken to in RESP instead: SET soak:NONCE to the request pattern, then
GET it back and compare (a mispaired stream returns another key's value, or another reply); the
connection's server domain is then unknown ("-"). CPython is dynamically linked, so under
slipstream-trace this runs in hybrid mode (libslipstream-preload.so).
"""

import argparse
import errno
import os
import resource
import socket
import struct
import sys
import threading
import time

MASK = (1 << 64) - 1
PERIOD = 4093
REPLY_SALT = 0x5A5A5A5A5A5A5A5A
REQ = struct.Struct("<4sIQQQ")
REPLY = struct.Struct("<4sI16sQQQII")
XOR_TABLES = [bytes(b ^ k for b in range(256)) for k in range(256)]
OUT_LOCK = threading.Lock()
DOMAINS = {1: "unix", 2: "tcp"}
TCP_LIKE = {errno.ECONNRESET, errno.EPIPE, errno.ECONNREFUSED, errno.ETIMEDOUT,
            errno.ECONNABORTED, errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.EADDRNOTAVAIL,
            errno.EHOSTUNREACH, errno.ENETUNREACH}


def say(line):
    data = (line + "\n").encode()
    with OUT_LOCK:
        os.write(1, data)


def pattern_block(seed):
    """fx_pattern_byte(seed, i) for i < PERIOD (tests/programs/c/fixture.h)."""
    out = bytearray(PERIOD)
    seed_mix = ((seed + 1) * 0xC2B2AE3D27D4EB4F) & MASK
    for k in range(PERIOD):
        x = (((k + 1) * 0x9E3779B97F4A7C15) & MASK) ^ seed_mix
        x ^= x >> 29
        x = (x * 0xBF58476D1CE4E5B9) & MASK
        x ^= x >> 32
        out[k] = x & 0xFF
    return bytes(out)


class Stream:
    """Bytes of the soak pattern of one seed (soak_proto.h)."""

    def __init__(self, seed):
        self.block = pattern_block(seed & MASK)

    def get(self, offset, length):
        parts = []
        while length > 0:
            period, at = divmod(offset, PERIOD)
            n = min(length, PERIOD - at)
            parts.append(self.block[at:at + n].translate(XOR_TABLES[period & 0xFF]))
            offset += n
            length -= n
        return b"".join(parts)


def domain(sock):
    try:
        name = os.getxattr(sock.fileno(), "system.sockprotoname")
    except OSError:
        return 0
    return 1 if name.startswith(b"UNIX") else 2 if name.startswith(b"TCP") else 0


def set_nofile(n):
    if n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))


class Eof(Exception):
    pass


def recv_exact(sock, n):
    parts, left = [], n
    while left > 0:
        chunk = sock.recv(min(left, 1 << 16))
        if not chunk:
            raise Eof(n - left)
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


# ---- Server -----------------------------------------------------------------------------------

def serve(conn, name, dom):
    conn.settimeout(60)
    nonce = None
    try:
        head = recv_exact(conn, REQ.size)
        magic, pause_ms, nonce, req_len, reply_len = REQ.unpack(head)
        if magic != b"SSKQ":
            return
        stream, got, status = Stream(nonce), 0, 0
        while got < req_len:
            chunk = conn.recv(min(req_len - got, 1 << 16))
            if not chunk:
                return
            if chunk != stream.get(got, len(chunk)):
                status = 1
            got += len(chunk)
        conn.sendall(REPLY.pack(b"SSKR", status, name.encode(), nonce, got, reply_len, dom, 0))
        stream, off = Stream(nonce ^ REPLY_SALT), 0
        while off < reply_len:
            if pause_ms and off >= reply_len // 2:
                time.sleep(pause_ms / 1000)
                pause_ms = 0
            n = min(reply_len - off, 1 << 16)
            conn.sendall(stream.get(off, n))
            off += n
        while conn.recv(256):
            pass
    except socket.timeout:
        say(f"stall nonce={nonce or 0:016x} server={name}")
    except (OSError, Eof):
        pass
    finally:
        conn.close()


def server(args):
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", args.port))
    lsock.listen(4096)
    tmp = f"{args.port_file}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(f"{lsock.getsockname()[1]}\n")
    os.rename(tmp, args.port_file)
    while True:
        try:
            conn, _ = lsock.accept()
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                time.sleep(0.02)
            continue
        threading.Thread(target=serve, args=(conn, args.name, domain(conn)), daemon=True).start()


# ---- Client -----------------------------------------------------------------------------------

def mix(x):
    x = (x + 0x9E3779B97F4A7C15) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def size_of(r, top):
    if top <= 0 or r % 7 == 0:
        return 0
    bits = (r % 10000) / 10000 * top.bit_length()
    return min(top, int((1 << int(bits)) * (1 + ((r >> 20) % 1000) / 1000)))


class Exchange:
    def __init__(self, target, nonce):
        self.target, self.nonce = target, nonce
        self.res, self.stage, self.err = "?", "socket", "-"
        self.cdom = self.sdom = 0
        self.sent = self.recvd = self.want = 0
        self.t0 = time.monotonic()

    def fail(self, e):
        if isinstance(e, Eof):
            self.err, self.res = "EOF", "fail"
        elif isinstance(e, socket.timeout):
            self.err, self.res = "ETIMEDOUT", "fail"
        else:
            self.err = errno.errorcode.get(e.errno, f"errno{e.errno}")
            self.res = "fail" if e.errno in TCP_LIKE else "badcall"

    def line(self):
        return (f"conn nonce={self.nonce:016x} target={self.target[0]} t0={self.t0:.6f} "
                f"t1={time.monotonic():.6f} res={self.res} stage={self.stage} errno={self.err} "
                f"cdom={DOMAINS.get(self.cdom, '-')} sdom={DOMAINS.get(self.sdom, '-')} "
                f"sent={self.sent} recvd={self.recvd} want={self.want}")


class Client:
    def __init__(self, args):
        self.args = args
        self.targets = []
        for spec in args.target:
            name, addr = spec.split("=", 1)
            host, port = addr.rsplit(":", 1)
            self.targets.append((name, (host, int(port))))
        self.activity = {}

    def stage(self, x, stage):
        x.stage = stage
        self.activity[threading.get_ident()] = [time.monotonic(), x.nonce, stage, False]

    def soak(self, x, sock, req_len, reply_len, pause_ms):
        self.stage(x, "request")
        sock.sendall(REQ.pack(b"SSKQ", pause_ms, x.nonce, req_len, reply_len))
        x.sent += REQ.size
        stream = Stream(x.nonce)
        for off in range(0, req_len, 1 << 16):
            data = stream.get(off, min(1 << 16, req_len - off))
            sock.sendall(data)
            x.sent += len(data)
        self.stage(x, "reply-header")
        magic, status, name, nonce, got, rlen, sdom, _ = REPLY.unpack(recv_exact(sock, REPLY.size))
        x.recvd += REPLY.size
        x.sdom = sdom
        if magic != b"SSKR":
            x.res = "corrupt"
            return
        if nonce != x.nonce or name.rstrip(b"\0").decode(errors="replace") != x.target[0]:
            x.res = "mispair"
            return
        if status != 0 or got != req_len or rlen != reply_len:
            x.res = "corrupt"
            return
        self.stage(x, "reply")
        stream, off = Stream(x.nonce ^ REPLY_SALT), 0
        while off < reply_len:
            chunk = sock.recv(min(reply_len - off, 1 << 16))
            if not chunk:
                raise Eof(off)
            if chunk != stream.get(off, len(chunk)):
                x.res = "corrupt"
                return
            off += len(chunk)
            x.recvd += len(chunk)
        self.finish(x, sock)

    def finish(self, x, sock):
        self.stage(x, "shutdown")
        sock.shutdown(socket.SHUT_WR)
        self.stage(x, "eof")
        x.res = "corrupt" if sock.recv(256) else "ok"

    def redis(self, x, sock, req_len):
        """SET then GET of a key of our own; the value is the request pattern."""
        key = f"soak:{x.nonce:016x}".encode()
        value = Stream(x.nonce).get(0, req_len)
        self.stage(x, "request")
        cmd = b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(value), value)
        cmd += b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n*2\r\n$3\r\nDEL\r\n$%d\r\n%s\r\n" % (
            len(key), key, len(key), key)
        sock.sendall(cmd)
        x.sent += len(cmd)
        want = b"+OK\r\n$%d\r\n%s\r\n:1\r\n" % (len(value), value)
        x.want = len(want)
        self.stage(x, "reply")
        got = b""
        while len(got) < len(want):
            chunk = sock.recv(min(len(want) - len(got), 1 << 16))
            if not chunk:
                raise Eof(len(got))
            got += chunk
            x.recvd += len(chunk)
            if want[:len(got)] != got:
                x.res = "corrupt"  # another key's value, or bytes lost or changed
                return
        self.finish(x, sock)

    def exchange(self, i):
        a = self.args
        r = mix((a.seed * 1000003 + i) & MASK)
        target = self.targets[mix(r) % len(self.targets)]
        x = Exchange(target, mix(r ^ 0x1234))
        req_len, reply_len = size_of(mix(r + 1), a.max_bytes), size_of(mix(r + 2), a.max_bytes)
        hold = mix(r + 4) % (a.max_hold_ms + 1) if mix(r + 3) % 3 == 0 else 0
        pause = mix(r + 6) % (a.max_hold_ms + 1) if mix(r + 5) % 3 == 0 else 0
        x.want = REPLY.size + reply_len
        sock = None
        try:
            self.stage(x, "socket")
            sock = socket.socket()
            self.stage(x, "connect")
            sock.connect(target[1])
            x.cdom = domain(sock)
            sock.settimeout(a.hang_s)
            if hold:
                self.stage(x, "hold")
                time.sleep(hold / 1000)
            if target[0] == "redis":
                self.redis(x, sock, req_len)
            else:
                self.soak(x, sock, req_len, reply_len, pause)
        except (OSError, Eof) as e:
            x.fail(e)
        finally:
            self.activity.pop(threading.get_ident(), None)
            if sock is not None:
                sock.close()
        say(x.line())

    def worker(self, t):
        for i in range(t, self.args.conns, self.args.threads):
            self.exchange(i)

    def watchdog(self):
        while True:
            time.sleep(0.2)
            now = time.monotonic()
            for entry in list(self.activity.values()):
                since, nonce, stage, reported = entry
                if now - since > self.args.hang_s + 5 and not reported:
                    entry[3] = True
                    say(f"hung nonce={nonce:016x} stage={stage}")

    def run(self):
        threading.Thread(target=self.watchdog, daemon=True).start()
        workers = [threading.Thread(target=self.worker, args=(t,))
                   for t in range(self.args.threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=("server", "client"))
    p.add_argument("--name", default="")
    p.add_argument("--port-file")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--nofile", type=int, default=0)
    p.add_argument("--target", action="append", default=[])
    p.add_argument("--conns", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-bytes", type=int, default=1 << 20)
    p.add_argument("--max-hold-ms", type=int, default=500)
    p.add_argument("--hang-s", type=int, default=30)
    args = p.parse_args()
    set_nofile(args.nofile)
    if args.role == "server":
        server(args)
    else:
        Client(args).run()


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""A Python client and server for Slipstream's switch tests (CPython, dynamically linked).

    switch_peer.py server|client [--api blocking|asyncio] [--family ipv4|ipv6|v4mapped]
        [--host H] [--port P] [--port-file F] [--retry SECONDS] [--wait-retry] [--count N]
        [--mode echo|sink|source|rr] [--bytes N] [--chunk C] [--rounds R] [--seed S]
        [--hold] [--log]

Speaks the protocol of tests/programs/c/switch_peer.c (modes, stream, CRC-32, gates, ready, conn
and summary lines), so C, Go and Python clients and servers pair with each other. --api blocking
uses the socket module's blocking calls (no timeout); --api asyncio uses asyncio streams
(non-blocking sockets, epoll).
"""

import argparse
import asyncio
import os
import socket
import sys
import time
import zlib

MASK = (1 << 64) - 1
XOR_TABLES = [bytes(i ^ x for i in range(256)) for x in range(256)]


def splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


class Stream:
    """The byte stream of one seed (see switch_peer.c)."""

    def __init__(self, seed):
        alphabet = bytes(splitmix64(seed * 4096 + j) & 0xFF for j in range(4096))
        self.doubled = alphabet + alphabet

    def bytes(self, offset, length):
        parts = []
        pos, end = offset, offset + length
        while pos < end:
            block, in_block = pos >> 12, pos & 4095
            n = min(4096 - in_block, end - pos)
            start = (in_block + block * 1031) & 4095
            piece = self.doubled[start:start + n]
            x = (block >> 12) & 0xFF
            parts.append(piece.translate(XOR_TABLES[x]) if x else piece)
            pos += n
        return b"".join(parts)


def stream_crc(seed, length):
    s, crc = Stream(seed), 0
    for off in range(0, length, 1 << 16):
        crc = zlib.crc32(s.bytes(off, min(1 << 16, length - off)), crc)
    return crc


def say(text):
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def gate():
    """Waits for one line on stdin, byte by byte; EOF counts as a line."""
    while True:
        b = os.read(0, 1)
        if not b or b == b"\n":
            return


def addr_text(addr):
    if len(addr) == 4:
        return f"[{addr[0]}]:{addr[1]}"
    return f"{addr[0]}:{addr[1]}"


class Tally:
    def __init__(self):
        self.out = self.inn = self.crc_out = self.crc_in = 0

    def sent(self, data):
        self.out += len(data)
        self.crc_out = zlib.crc32(data, self.crc_out)

    def got(self, data):
        self.inn += len(data)
        self.crc_in = zlib.crc32(data, self.crc_in)


def read_port(args):
    if not args.port_file:
        return args.port
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with open(args.port_file) as f:
                text = f.read().strip()
            if text:
                return int(text)
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    sys.exit(f"switch_peer.py: no port in {args.port_file}")


def listen_address(args):
    return {"ipv4": (socket.AF_INET, "127.0.0.1"), "ipv6": (socket.AF_INET6, "::1"),
            "v4mapped": (socket.AF_INET6, "::")}[args.family]


def make_listener(args):
    family, host = listen_address(args)
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(args.family == "ipv6"))
    sock.bind((host, args.port))
    sock.listen(128)
    if args.port_file:
        tmp = f"{args.port_file}.tmp.{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(f"{sock.getsockname()[1]}\n")
        os.rename(tmp, args.port_file)
    return sock


def log_client(args, local, peer, seed, t):
    if args.log:
        say(f"conn local={local} peer={peer} seed={seed} bytes_out={t.out} crc_out={t.crc_out:08x}"
            f" bytes_in={t.inn} crc_in={t.crc_in:08x}")


def log_server(args, local, peer, t):
    if args.log:
        say(f"conn local={local} peer={peer} bytes_in={t.inn} crc_in={t.crc_in:08x}"
            f" bytes_out={t.out}")


# ---- Blocking socket API --------------------------------------------------------------------

def recv_exact(sock, n):
    chunks, got = [], 0
    while got < n:
        data = sock.recv(n - got)
        if not data:
            break
        chunks.append(data)
        got += len(data)
    return b"".join(chunks)


def recv_to_eof(sock):
    chunks = []
    while True:
        data = sock.recv(1 << 16)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def client_transfer(args, sock, seed, t):
    """One connection's exchange on a blocking socket; returns None or what went wrong."""
    if args.mode in ("echo", "sink"):
        s = Stream(seed)
        for off in range(0, args.bytes, args.chunk):
            block = s.bytes(off, min(args.chunk, args.bytes - off))
            sock.sendall(block)
            t.sent(block)
            if args.mode == "echo":
                back = recv_exact(sock, len(block))
                t.got(back)
                if back != block:
                    return f"echoed bytes differ at offset {off}"
        sock.shutdown(socket.SHUT_WR)
        rest = recv_to_eof(sock)
        t.got(rest)
        if args.mode == "sink":
            want = f"{t.out} {t.crc_out:08x}\n".encode()
            if rest != want:
                return f"reply {rest!r}, want {want!r}"
        elif rest:
            return f"{len(rest)} bytes after half-close"
    elif args.mode == "source":
        t.got(recv_to_eof(sock))
        if t.inn != args.bytes or t.crc_in != stream_crc(args.seed, args.bytes):
            return f"got {t.inn} bytes, crc {t.crc_in:08x}: not the stream"
    else:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(args.rounds):
            req = f"req {i:011d}\n".encode()
            sock.sendall(req)
            t.sent(req)
            rsp = recv_exact(sock, 16)
            t.got(rsp)
            if rsp != b"rsp" + req[3:]:
                return f"response {rsp!r} to {req!r}"
        sock.shutdown(socket.SHUT_WR)
        if recv_to_eof(sock):
            return "bytes after half-close"
    return None


def wait_before_retry(args):
    """After a refused connect: a gate (--wait-retry) or a 10 ms pause."""
    if args.wait_retry:
        say(f"refused pid={os.getpid()}")
        gate()
    else:
        time.sleep(0.01)


def connect_blocking(args, dest):
    family = socket.AF_INET6 if ":" in dest[0] else socket.AF_INET
    deadline = time.monotonic() + args.retry
    while True:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.connect(dest)
            return sock
        except ConnectionRefusedError:
            sock.close()
            if time.monotonic() >= deadline:
                raise
            wait_before_retry(args)


def run_client_blocking(args):
    dest = (args.host, read_port(args))
    totals = {"ok": 0, "out": 0, "in": 0, "errors": 0}
    for c in range(args.count):
        t, seed = Tally(), args.seed + c
        local = peer = "?"
        try:
            with connect_blocking(args, dest) as sock:
                local, peer = addr_text(sock.getsockname()), addr_text(sock.getpeername())
                if args.hold:
                    say(f"ready client pid={os.getpid()} fd={sock.fileno()} local={local} "
                        f"peer={peer}")
                    gate()
                problem = client_transfer(args, sock, seed, t)
        except OSError as e:
            problem = f"{type(e).__name__}: {e}"
        account(totals, t, problem, f"conn {c}")
        log_client(args, local, peer, seed, t)
    return totals


def serve_blocking(args, sock, t):
    if args.mode == "source":
        s = Stream(args.seed)
        for off in range(0, args.bytes, 1 << 16):
            block = s.bytes(off, min(1 << 16, args.bytes - off))
            sock.sendall(block)
            t.sent(block)
        return None
    if args.mode == "rr":
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            req = recv_exact(sock, 16)
            t.got(req)
            if not req:
                return None
            if len(req) != 16 or not req.startswith(b"req "):
                return f"bad request {req!r}"
            rsp = b"rsp " + req[4:]
            sock.sendall(rsp)
            t.sent(rsp)
    while True:
        data = sock.recv(1 << 16)
        if not data:
            break
        t.got(data)
        if args.mode == "echo":
            sock.sendall(data)
            t.sent(data)
    if args.mode == "sink":
        reply = f"{t.inn} {t.crc_in:08x}\n".encode()
        sock.sendall(reply)
        t.sent(reply)
    return None


def run_server_blocking(args):
    listener = make_listener(args)
    totals = {"ok": 0, "out": 0, "in": 0, "errors": 0}
    served = 0
    while args.count == 0 or served < args.count:
        sock, accepted_peer = listener.accept()
        served += 1
        t = Tally()
        with sock:
            local, peer = addr_text(sock.getsockname()), addr_text(sock.getpeername())
            problem = None if peer == addr_text(accepted_peer) else "getpeername differs"
            if args.hold:
                say(f"ready server pid={os.getpid()} fd={sock.fileno()} local={local} peer={peer}")
                gate()
            try:
                problem = serve_blocking(args, sock, t) or problem
            except OSError as e:
                problem = f"{type(e).__name__}: {e}"
        account(totals, t, problem, "server")
        log_server(args, local, peer, t)
    listener.close()
    return totals


def account(totals, t, problem, who):
    totals["out"] += t.out
    totals["in"] += t.inn
    if problem:
        print(f"switch_peer.py: {who}: {problem}", file=sys.stderr)
        totals["errors"] += 1
    else:
        totals["ok"] += 1


# ---- asyncio streams ------------------------------------------------------------------------

async def async_client_transfer(args, reader, writer, seed, t):
    if args.mode in ("echo", "sink"):
        s = Stream(seed)
        for off in range(0, args.bytes, args.chunk):
            block = s.bytes(off, min(args.chunk, args.bytes - off))
            writer.write(block)
            await writer.drain()
            t.sent(block)
            if args.mode == "echo":
                back = await reader.readexactly(len(block))
                t.got(back)
                if back != block:
                    return f"echoed bytes differ at offset {off}"
        writer.write_eof()
        rest = await reader.read()
        t.got(rest)
        if args.mode == "sink":
            want = f"{t.out} {t.crc_out:08x}\n".encode()
            if rest != want:
                return f"reply {rest!r}, want {want!r}"
        elif rest:
            return f"{len(rest)} bytes after half-close"
    elif args.mode == "source":
        t.got(await reader.read())
        if t.inn != args.bytes or t.crc_in != stream_crc(args.seed, args.bytes):
            return f"got {t.inn} bytes, crc {t.crc_in:08x}: not the stream"
    else:
        for i in range(args.rounds):
            req = f"req {i:011d}\n".encode()
            writer.write(req)
            t.sent(req)
            rsp = await reader.readexactly(16)
            t.got(rsp)
            if rsp != b"rsp" + req[3:]:
                return f"response {rsp!r} to {req!r}"
        writer.write_eof()
        if await reader.read():
            return "bytes after half-close"
    return None


async def async_connect(args, dest):
    deadline = time.monotonic() + args.retry
    while True:
        try:
            return await asyncio.open_connection(dest[0], dest[1])
        except ConnectionRefusedError:
            if time.monotonic() >= deadline:
                raise
            if args.wait_retry:
                await asyncio.get_running_loop().run_in_executor(None, wait_before_retry, args)
            else:
                await asyncio.sleep(0.01)


async def run_client_asyncio(args):
    dest = (args.host, read_port(args))
    loop = asyncio.get_running_loop()
    totals = {"ok": 0, "out": 0, "in": 0, "errors": 0}
    for c in range(args.count):
        t, seed = Tally(), args.seed + c
        local = peer = "?"
        try:
            reader, writer = await async_connect(args, dest)
            sock = writer.get_extra_info("socket")
            local, peer = addr_text(sock.getsockname()), addr_text(sock.getpeername())
            if args.hold:
                say(f"ready client pid={os.getpid()} fd={sock.fileno()} local={local} peer={peer}")
                await loop.run_in_executor(None, gate)
            problem = await async_client_transfer(args, reader, writer, seed, t)
            writer.close()
            await writer.wait_closed()
        except (OSError, asyncio.IncompleteReadError) as e:
            problem = f"{type(e).__name__}: {e}"
        account(totals, t, problem, f"conn {c}")
        log_client(args, local, peer, seed, t)
    return totals


async def async_serve(args, reader, writer, t):
    if args.mode == "source":
        s = Stream(args.seed)
        for off in range(0, args.bytes, 1 << 16):
            block = s.bytes(off, min(1 << 16, args.bytes - off))
            writer.write(block)
            await writer.drain()
            t.sent(block)
        return None
    if args.mode == "rr":
        while True:
            try:
                req = await reader.readexactly(16)
            except asyncio.IncompleteReadError as e:
                t.got(e.partial)
                return None if not e.partial else f"partial request {e.partial!r}"
            t.got(req)
            if not req.startswith(b"req "):
                return f"bad request {req!r}"
            writer.write(b"rsp " + req[4:])
            t.sent(b"rsp " + req[4:])
    while True:
        data = await reader.read(1 << 16)
        if not data:
            break
        t.got(data)
        if args.mode == "echo":
            writer.write(data)
            await writer.drain()
            t.sent(data)
    if args.mode == "sink":
        reply = f"{t.inn} {t.crc_in:08x}\n".encode()
        writer.write(reply)
        await writer.drain()
        t.sent(reply)
    return None


async def run_server_asyncio(args):
    loop = asyncio.get_running_loop()
    totals = {"ok": 0, "out": 0, "in": 0, "errors": 0}
    done = asyncio.Event()
    finished = 0
    started = 0

    async def handle(reader, writer):
        nonlocal finished, started
        started += 1
        if args.count and started > args.count:
            writer.close()
            return
        sock = writer.get_extra_info("socket")
        local, peer = addr_text(sock.getsockname()), addr_text(sock.getpeername())
        t = Tally()
        if args.hold:
            say(f"ready server pid={os.getpid()} fd={sock.fileno()} local={local} peer={peer}")
            await loop.run_in_executor(None, gate)
        try:
            problem = await async_serve(args, reader, writer, t)
            writer.close()
            await writer.wait_closed()
        except OSError as e:
            problem = f"{type(e).__name__}: {e}"
        account(totals, t, problem, "server")
        log_server(args, local, peer, t)
        finished += 1
        if args.count and finished >= args.count:
            done.set()

    server = await asyncio.start_server(handle, sock=make_listener(args))
    async with server:
        await done.wait()
    return totals


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["server", "client"])
    parser.add_argument("--api", choices=["blocking", "asyncio"], default="blocking")
    parser.add_argument("--family", choices=["ipv4", "ipv6", "v4mapped"], default="ipv4")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file")
    parser.add_argument("--retry", type=float, default=0)
    parser.add_argument("--wait-retry", action="store_true")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--mode", choices=["echo", "sink", "source", "rr"], default="echo")
    parser.add_argument("--bytes", type=int, default=65536)
    parser.add_argument("--chunk", type=int, default=65536)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hold", action="store_true")
    parser.add_argument("--log", action="store_true")
    args = parser.parse_args()
    if args.role == "client":
        totals = (asyncio.run(run_client_asyncio(args)) if args.api == "asyncio"
                  else run_client_blocking(args))
        say(f"client: mode={args.mode} connections={totals['ok']} bytes_out={totals['out']} "
            f"bytes_in={totals['in']} errors={totals['errors']}")
    else:
        totals = (asyncio.run(run_server_asyncio(args)) if args.api == "asyncio"
                  else run_server_blocking(args))
        say(f"server: mode={args.mode} connections={totals['ok']} bytes_in={totals['in']} "
            f"bytes_out={totals['out']} errors={totals['errors']}")
    sys.exit(1 if totals["errors"] else 0)


if __name__ == "__main__":
    main()

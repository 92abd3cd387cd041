#!/usr/bin/env python3
"""A Python TCP client for Slipstream's tests (CPython's socket module, dynamically linked).

Speaks the protocol of tests/programs/c/tcp_server.c and prints the summary line of
tests/programs/c/tcp_client.c, so the outputs of the three clients compare:

    client: mode=sink connections=T bytes=X errors=0

Connection c uses the pattern with seed S + c (fx_pattern_byte in tests/programs/c/fixture.h).
Modes: echo (each chunk read back and compared, then half-close and EOF), sink (half-close, then
the "<count> <fnv1a64>" reply must match) and source (read to EOF; the bytes must be the pattern
of seed S). Exit status 1 on any mismatch.
"""

import argparse
import os
import socket
import sys
import time

MASK = (1 << 64) - 1
FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3


def pattern(seed, offset, length):
    """Bytes [offset, offset + length) of the stream `seed`."""
    out = bytearray(length)
    seed_mix = ((seed + 1) * 0xC2B2AE3D27D4EB4F) & MASK
    for k in range(length):
        x = (((offset + k + 1) * 0x9E3779B97F4A7C15) & MASK) ^ seed_mix
        x ^= x >> 29
        x = (x * 0xBF58476D1CE4E5B9) & MASK
        x ^= x >> 32
        out[k] = x & 0xFF
    return bytes(out)


def fnv1a(data, h=FNV_OFFSET):
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & MASK
    return h


def read_port(args):
    if not args.port_file:
        return args.port
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with open(args.port_file) as f:
                text = f.read().strip()
            if text:
                return int(text)
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    sys.exit(f"tcp_client.py: no port in {args.port_file}")


def recv_all(sock):
    chunks = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def one_connection(args, dest, conn_index):
    """Runs one connection; returns None, or a description of what went wrong."""
    family = socket.AF_INET6 if ":" in dest[0] else socket.AF_INET
    seed = args.seed + conn_index
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(dest)
        peer = sock.getpeername()
        if (peer[0], peer[1]) != dest:
            return f"getpeername {peer} is not {dest}"
        if sock.getsockname()[1] <= 0:
            return "getsockname has no port"
        if args.mode == "source":
            data = recv_all(sock)
            if len(data) != args.bytes or data != pattern(args.seed, 0, args.bytes):
                return f"source: got {len(data)} bytes that differ from the pattern"
            return None
        h = FNV_OFFSET
        for off in range(0, args.bytes, args.chunk):
            block = pattern(seed, off, min(args.chunk, args.bytes - off))
            sock.sendall(block)
            h = fnv1a(block, h)
            if args.mode == "echo":
                got = b""
                while len(got) < len(block):
                    data = sock.recv(len(block) - len(got))
                    if not data:
                        return f"echo: EOF at offset {off}"
                    got += data
                if got != block:
                    return f"echo: bytes differ at offset {off}"
        sock.shutdown(socket.SHUT_WR)
        rest = recv_all(sock)
        if args.mode == "sink":
            want = f"{args.bytes} {h:016x}\n".encode()
            if rest != want:
                return f"sink reply {rest!r}, want {want!r}"
        elif rest:
            return f"echo: {len(rest)} unexpected bytes after half-close"
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file")
    parser.add_argument("--mode", choices=["echo", "sink", "source"], default="sink")
    parser.add_argument("--bytes", type=int, default=20000)
    parser.add_argument("--chunk", type=int, default=4096)
    parser.add_argument("--conns", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    dest = (args.host, read_port(args))
    ok = errors = 0
    for c in range(args.conns):
        try:
            problem = one_connection(args, dest, c)
        except OSError as e:
            problem = f"{type(e).__name__}: {e}"
        if problem:
            print(f"tcp_client.py: conn {c}: {problem}", file=sys.stderr)
            errors += 1
        else:
            ok += 1
    print(f"client: mode={args.mode} connections={ok} bytes={ok * args.bytes} errors={errors}")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The Python side of Slipstream's close and shutdown tests (the socket module, blocking).

    close_peer.py server|client --port-file F --case closeread|linger|writeafter

Same protocol and cases as tests/programs/go/closepeer: "ready ROLE pid=P fd=F local=A peer=B",
a line on stdin, then the case. Python ignores SIGPIPE, so a write to a closed peer reports EPIPE.
"""

import argparse
import errno
import os
import socket
import struct
import sys
import time


def say(text):
    print(text, flush=True)


def gate():
    sys.stdin.readline()


def err_text(e):
    if isinstance(e, socket.timeout):
        return "timeout"
    return errno.errorcode.get(e.errno, str(e.errno))


def ready(role, sock):
    local, peer = sock.getsockname(), sock.getpeername()
    say(f"ready {role} pid={os.getpid()} fd={sock.fileno()} local={local[0]}:{local[1]} "
        f"peer={peer[0]}:{peer[1]}")
    gate()


def read_once(sock):
    sock.settimeout(3)
    try:
        data = sock.recv(4096)
        say(f"read: {len(data)} {'EOF' if not data else 'ok'}")
    except OSError as e:
        say(f"read: 0 {err_text(e)}")
    sock.settimeout(None)


def write(sock, data):
    try:
        say(f"write: {sock.send(data)} ok")
    except OSError as e:
        say(f"write: 0 {err_text(e)}")


def server(args):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    with open(args.port_file + ".tmp", "w") as f:
        f.write(f"{listener.getsockname()[1]}\n")
    os.rename(args.port_file + ".tmp", args.port_file)
    sock, _ = listener.accept()
    ready("server", sock)
    if args.case == "closeread":
        sock.shutdown(socket.SHUT_RD)
        say("closeread: ok")
        read_once(sock)
        write(sock, b"hello")
        sock.close()
    elif args.case == "linger":
        read_once(sock)
    elif args.case == "writeafter":
        read_once(sock)
        for _ in range(2):
            write(sock, b"hello")
            time.sleep(0.05)


def client(args):
    deadline = time.monotonic() + 30
    while True:
        try:
            with open(args.port_file) as f:
                port = int(f.read())
            break
        except (FileNotFoundError, ValueError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    sock = socket.create_connection(("127.0.0.1", port))
    ready("client", sock)
    if args.case == "closeread":
        sock.settimeout(10)
        got = b""
        try:
            while chunk := sock.recv(4096):
                got += chunk
            say(f"got: {got!r} EOF")
        except OSError as e:
            say(f"got: {got!r} {err_text(e)}")
    elif args.case == "linger":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        say("linger: ok")
        sock.close()
        say("close: ok")
    elif args.case == "writeafter":
        sock.close()
        say("close: ok")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["server", "client"])
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--case", required=True, choices=["closeread", "linger", "writeafter"])
    args = parser.parse_args()
    (server if args.role == "server" else client)(args)
    say("done")


if __name__ == "__main__":
    main()

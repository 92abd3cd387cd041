#!/usr/bin/env python3
"""The three failing inputs of issue #9's data-path flags, between a Python server and client.

    flags_peer.py server --port-file F
    flags_peer.py client --port-file F

After connect/accept each side prints "ready ROLE pid=P fd=F local=A peer=B" and waits for a line
on stdin (tests/integration/switch_support.py). Then:
  - the client sends 1 byte, and 51 more 50 ms later; the server peeks 5 bytes with
    MSG_PEEK | MSG_WAITALL (protocol sniffing): TCP returns 5;
  - the server discards 5 bytes with MSG_TRUNC into a buffer it checks stays untouched: TCP
    returns 5 and copies nothing;
  - the server reads the remaining 47 bytes;
  - the server sendto()s "hello" with the client's address on the connected socket: TCP ignores
    the address and returns 5; the client reads it.
Each step prints one line; tests/programs/go/flagspeer speaks the same protocol.
"""

import argparse
import os
import socket
import sys
import time

TAIL = b"123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP"  # 51 bytes after the first "0"


def say(text):
    print(text, flush=True)


def ready(role, sock):
    local, peer = sock.getsockname(), sock.getpeername()
    say(f"ready {role} pid={os.getpid()} fd={sock.fileno()} "
        f"local={local[0]}:{local[1]} peer={peer[0]}:{peer[1]}")
    sys.stdin.readline()


def recv_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def server(port_file):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    with open(port_file + ".tmp", "w") as f:
        f.write(f"{listener.getsockname()[1]}\n")
    os.rename(port_file + ".tmp", port_file)
    conn, peer = listener.accept()
    ready("server", conn)
    data = conn.recv(5, socket.MSG_PEEK | socket.MSG_WAITALL)
    say(f"peek_waitall: ret={len(data)} data={data.decode()}")
    buf = bytearray(b"x" * 8)
    n = conn.recv_into(buf, 5, socket.MSG_TRUNC)
    say(f"trunc: ret={n} buf={buf.decode()}")
    rest = recv_exactly(conn, 47)
    say(f"rest: {rest.decode()}")
    try:
        say(f"sendto: ret={conn.sendto(b'hello', peer)}")
    except OSError as e:
        say(f"sendto: err={e.errno}")
    conn.shutdown(socket.SHUT_WR)
    say(f"eof: {conn.recv(1)!r}")


def client(port_file):
    port = int(open(port_file).read())
    sock = socket.create_connection(("127.0.0.1", port))
    ready("client", sock)
    sock.sendall(b"0")
    time.sleep(0.05)
    sock.sendall(TAIL)
    data = recv_exactly(sock, 5)
    say(f"got: {data.decode()}")
    say(f"eof: {sock.recv(1)!r}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["server", "client"])
    p.add_argument("--port-file", required=True)
    a = p.parse_args()
    (server if a.role == "server" else client)(a.port_file)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/TARGET/NAME), in the wire layouts of
matcher/protocol.h, sock_diag replies, and command lines. Run it again after a layout changes:
python3 fuzz/make_corpus.py"""
import os
import socket
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
MAGIC, VERSION = 0x53504C53, 1
T = dict(register=1, intent=2, connected=3, abort=4, claim=5, installed=6, status=7, disown=8,
         hello=9, adopt=10, sweep=11, peer_pid=12, claim_reply=102, status_reply=103, error=104,
         release=201, relay=202, listener=203, push=204, netns=205, remote_listener=206)


def header(msg_type, body, seq=1, pid=100, magic=MAGIC, version=VERSION, body_len=None):
    n = len(body) if body_len is None else body_len
    return struct.pack("<IHHQiI", magic, version, msg_type, seq, pid, n) + body


def sockaddr_in(port, addr="127.0.0.1"):
    return struct.pack("<H", socket.AF_INET) + struct.pack(">H", port) + socket.inet_aton(addr) + bytes(8)


def sockaddr_in6(port, addr="::1"):
    return (struct.pack("<H", socket.AF_INET6) + struct.pack(">HI", port, 0) +
            socket.inet_pton(socket.AF_INET6, addr) + struct.pack("<I", 0))


def storage(sa):
    return sa + bytes(128 - len(sa))


def netns_addrs(addrs):
    body = struct.pack("<II", len(addrs), 0)
    for a in addrs:
        body += socket.inet_pton(socket.AF_INET6, a)
    return body + bytes(16 * (32 - len(addrs)))


BODIES = {
    "inode": struct.pack("<Q", 123456),
    "intent_by_seq": bytes([1]) + bytes(7),
    "connected": struct.pack("<QB7x", 4242, 0),
    "push": storage(sockaddr_in(8080)) + storage(sockaddr_in(40000)) + struct.pack("<IIQ", 16, 16, 99),
    "push_bad_len": storage(sockaddr_in(8080)) + storage(sockaddr_in(1)) + struct.pack("<IIQ", 4096, 16, 1),
    "hello": netns_addrs(["::ffff:10.0.0.1", "fd00::1"]),
    "hello_overcount": netns_addrs(["::1"])[:0] + struct.pack("<II", 0xFFFFFFFF, 0) + bytes(512),
    "netns": struct.pack("<QBB6x", 7, 1, 1) + netns_addrs(["::ffff:192.168.1.2"]),
    "remote_listener": struct.pack("<QQ", 5, 7) + storage(sockaddr_in6(443)) + struct.pack("<IBB2x", 28, 1, 0),
    "error": struct.pack("<i", 22) + b"x" * 124,  # no terminating NUL
    "claim_reply": bytes([1]),
}


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def protocol():
    # byte 0: fd count (bits 0-2), bit 3 oversize; then the datagram.
    for name, (t, body) in {
        "status": (T["status"], b""), "intent": (T["intent"], BODIES["intent_by_seq"]),
        "connected": (T["connected"], BODIES["connected"]), "push": (T["push"], BODIES["push"]),
        "push_bad_len": (T["push"], BODIES["push_bad_len"]), "hello": (T["hello"], BODIES["hello"]),
        "netns": (T["netns"], BODIES["netns"]),
        "remote_listener": (T["remote_listener"], BODIES["remote_listener"]),
        "error": (T["error"], BODIES["error"]), "release": (T["release"], BODIES["inode"]),
    }.items():
        write("protocol_fuzz", name, bytes([1 if t in (T["push"], T["hello"]) else 0]) + header(t, body))
    write("protocol_fuzz", "bad_magic", bytes([0]) + header(T["status"], b"", magic=0))
    write("protocol_fuzz", "bad_len", bytes([0]) + header(T["abort"], b"\0" * 8, body_len=9))
    write("protocol_fuzz", "too_many_fds", bytes([7]) + header(T["connected"], BODIES["connected"]))
    write("protocol_fuzz", "truncated_header", bytes([0]) + header(T["claim"], b"")[:10])
    write("protocol_fuzz", "oversize", bytes([8]) + header(T["status"], b""))
    write("protocol_fuzz", "empty_with_fd", bytes([1]))


def daemon():
    # records: [type index][fds: count | kind << 3][len lo][len hi][bytes]
    idx = {t: i for i, t in enumerate([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 102, 204, 104, 0, 999])}

    def rec(t, fds=0, kind=0, body=b"", raw=False):
        ty = 0xF0 if raw else idx[t]
        return bytes([ty, fds | (kind << 3)]) + struct.pack("<H", len(body)) + body

    write("daemon_fuzz", "register_listener", rec(1, 1, 1))
    write("daemon_fuzz", "intent_connected", rec(2, 1, 2, BODIES["intent_by_seq"]) +
          rec(3, 2, 2, BODIES["connected"]) + rec(4, 0, 0, BODIES["inode"]))
    write("daemon_fuzz", "claim_accepted", rec(1, 1, 1) + rec(5, 1, 3))
    write("daemon_fuzz", "hello_diag", rec(9, 1, 5, BODIES["hello"]))
    write("daemon_fuzz", "hello_socketpair", rec(9, 1, 4, BODIES["hello"]))
    write("daemon_fuzz", "installed_disown_adopt", rec(6, 0, 0, BODIES["inode"]) +
          rec(8, 0, 0, BODIES["inode"]) + rec(10, 1, 2, BODIES["inode"]) + rec(12, 0, 0, BODIES["inode"]))
    write("daemon_fuzz", "sweep_status", rec(11) + rec(7))
    write("daemon_fuzz", "raw_garbage", rec(0, 3, 7, b"\x01\x02\x03", raw=True))
    write("daemon_fuzz", "replies_sent_to_daemon", rec(102, 1, 3, b"\1") + rec(204, 1, 4, BODIES["push"]))


def sockaddr():
    a4, a6 = sockaddr_in(8080), sockaddr_in6(8080)
    mapped = sockaddr_in6(8080, "::ffff:127.0.0.1")
    un = struct.pack("<H", socket.AF_UNIX) + b"/tmp/x\0"
    for name, first, rest in [("v4_v4", a4, sockaddr_in(8080, "0.0.0.0")), ("v6_v6", a6, sockaddr_in6(8080, "::")),
                              ("mapped_v4", mapped, a4), ("unix", un, b""), ("short", a4[:7], a6[:20]),
                              ("text_v4", b"", b"127.0.0.1:80"), ("text_v6", b"", b"[::1]:65535")]:
        write("sockaddr_fuzz", name, bytes([len(first)]) + first + rest)


def status():
    write("status_fuzz", "empty", b'{"pid":1,"supervisors":[],"connections_total":0,"pending":0,'
          b'"pairs_total":0,"relays_total":0,"connections":[]}')
    write("status_fuzz", "one", b'{"pid":12,"supervisors":[{"pid":3}],"listeners_total":1,'
          b'"connections_total":2,"pending":0,"pairs_total":2,"relays_total":0,"connections":[{'
          b'"client_pid":4,"client":"127.0.0.1:40000","server_pid":5,"server":"127.0.0.1:8080",'
          b'"client_unix_inode":77,"server_unix_inode":78,"client_netns":1,"server_netns":1,'
          b'"evidence":"tcp-sequence-numbers"}]}')


def options():
    for name, daemon_cli, args in [("trace_cmd", 0, ["--trace", "--stats", "-o", "f", "--", "prog", "-x"]),
                                   ("trace_flags", 0, ["--no-switch", "--no-preload", "--allow-io-uring", "prog"]),
                                   ("trace_help", 0, ["--help"]), ("trace_bad", 0, ["--bogus"]),
                                   ("daemon_status", 1, ["--status", "--json"]),
                                   ("daemon_idle", 1, ["--foreground", "--idle-exit", "5", "--ready-fd", "3"]),
                                   ("daemon_bad", 1, ["--idle-exit", "-1"])]:
        write("options_fuzz", name, bytes([daemon_cli]) + b"\0".join(a.encode() for a in args))


def sock_diag():
    def nlmsg(t, seq, payload, flags=2):
        return struct.pack("<IHHII", 16 + len(payload), t, flags, seq, 0) + payload + bytes(-len(payload) % 4)

    inet = (struct.pack("<BBBB", socket.AF_INET, 10, 0, 0) + struct.pack(">HH", 8080, 0) +
            socket.inet_aton("127.0.0.1") + bytes(12) + bytes(16) + struct.pack("<IQ", 0, 0) +
            struct.pack("<IIIII", 0, 0, 0, 1000, 5555))
    v6only = struct.pack("<HH", 5, 26) + b"\1" + bytes(3)
    unix = struct.pack("<BBBBII", socket.AF_UNIX, 5, 1, 0, 4242, 0) + bytes(8)
    peer = struct.pack("<HHI", 8, 2, 4343)
    done = nlmsg(3, 1, struct.pack("<i", 0))
    write("sock_diag_fuzz", "inet_dump", bytes([3]) + nlmsg(20, 1, inet + v6only) + done)
    write("sock_diag_fuzz", "unix_peer", bytes([2]) + nlmsg(20, 1, unix + peer))
    write("sock_diag_fuzz", "error", bytes([2]) + nlmsg(2, 1, struct.pack("<i", -2) + bytes(16)))
    write("sock_diag_fuzz", "short_inet", bytes([3]) + nlmsg(20, 1, inet[:20]))


if __name__ == "__main__":
    protocol()
    daemon()
    sockaddr()
    status()
    options()
    sock_diag()
